"""Speech that starts while the text is still being written (issue #20's figures).

    python benchmarks/bench_realtime.py ENGINE_OR_MODEL_DIR [--rate 30] [--frames 12] [--repeats 3]

The text (:data:`TEXT`, four sentences) is cut into LLM-like tokens (a word with its leading space,
or one punctuation mark) and fed to ``TTS.stream_text`` at a fixed rate (``--rate`` tokens per
second, an LLM's pace), on a thread, as a producer would. Timed, each the median of ``--repeats``
runs after a warm-up (which also fills the voice-prefix cache):

- **first sentence, streamed**: from the moment the first sentence's last token was produced to the
  first audio. The segmenter releases the sentence when the next token shows it ended (a capital
  after the stop): one token interval of that wait is part of this figure;
- **first sentence, sent whole**: the same sentence's time to first audio through ``TTS.stream``
  when it is all there at once — the two should be within ~10 % once the model's own time to
  first audio is large against one token interval;
- **total**: from the first token to the last audio, streamed, against waiting for the whole text
  and then sending it (``stream_text`` of the whole text once produced: the same segments, the
  same parts, the same work — only when the text arrives differs).

Every part makes at most ``--frames`` frames (``max_frames``; a random model rarely says END_AUDIO
before that), so the work is fixed. Printed: the git revision and command to commit with the
output, then the figures.
"""

from __future__ import annotations

import argparse
import logging
import re
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_longform import revision  # noqa: E402
from bench_runtime import machine  # noqa: E402

TEXT = ("The morning train left the station a few minutes late. Outside the window, fields of wheat rolled "
        "past under a pale autumn sky. A conductor walked slowly down the aisle, checking tickets. When the "
        "train finally arrived, the platform was full of people.")
_TOKEN = re.compile(r"\s*[\w']+|\s*[^\w\s]")


def tokens(text: str) -> list[str]:
    """LLM-like pieces: a word with its leading space, or one punctuation mark."""
    return _TOKEN.findall(text)


def streamed(tts, options, pieces: list[str], rate: float) -> dict:
    """Feed ``pieces`` at ``rate`` per second; when the first sentence's last piece was produced, when
    the first audio came, when the last audio came (seconds from the first piece)."""
    first_end = next(i for i, p in enumerate(pieces) if p.strip() in (".", "!", "?"))
    marks = {}
    start = time.perf_counter()

    def produce():
        for i, piece in enumerate(pieces):
            time.sleep(max(0.0, start + i / rate - time.perf_counter()))
            if i == first_end:
                marks["sentence"] = time.perf_counter() - start
            yield piece
        marks["text"] = time.perf_counter() - start

    for _ in tts.stream_text(produce(), options):
        now = time.perf_counter() - start
        marks.setdefault("first audio", now)
        marks["last audio"] = now
    return marks


def sent_at_end(tts, options, pieces: list[str], rate: float) -> dict:
    """Wait until the whole text is produced at ``rate``, then send it whole."""
    start = time.perf_counter()
    time.sleep(len(pieces) / rate)
    marks = {"text": time.perf_counter() - start}
    for _ in tts.stream_text(["".join(pieces)], options):
        now = time.perf_counter() - start
        marks.setdefault("first audio", now)
        marks["last audio"] = now
    return marks


def whole_sentence_ttfa(tts, options, sentence: str) -> float:
    start = time.perf_counter()
    for _ in tts.stream(sentence, options):
        return time.perf_counter() - start
    raise RuntimeError("no audio")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="engine or model directory")
    p.add_argument("--backend", help="default: the engine's own (voxtral_tts.load's choice)")
    p.add_argument("--rate", type=float, default=30.0, help="tokens per second of the text's producer")
    p.add_argument("--frames", type=int, default=12, help="frames per part (max_frames)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-batch", type=int, default=4)
    p.add_argument("--voice", default="neutral_female")
    args = p.parse_args()
    logging.getLogger("voxtral_tts").setLevel(logging.ERROR)  # every part is cut at --frames on purpose

    import voxtral_tts
    from voxtral_tts import SpeechOptions
    from voxtral_tts.segmenter import segments

    print(f"git revision: {revision()}")
    print(f"command: python {' '.join(sys.argv)}")
    print(f"machine: {machine()}")
    start = time.perf_counter()
    tts = voxtral_tts.load(args.model, args.backend, max_batch=args.max_batch, progress=False)
    print(f"loaded {args.model} ({tts.backend.name}, max_batch {args.max_batch}) in "
          f"{time.perf_counter() - start:.1f} s")
    pieces = tokens(TEXT)
    parts = segments(TEXT)
    print(f"text: {len(TEXT)} characters, {len(pieces)} tokens at {args.rate:g}/s "
          f"({len(pieces) / args.rate:.2f} s to write), {len(parts)} segments (responsive); "
          f"{args.frames} frames per part; voice {args.voice}")
    options = SpeechOptions(voice=args.voice, seed=0, max_frames=args.frames)
    for _ in tts.stream_text([TEXT], options):  # warm-up
        pass
    whole_sentence_ttfa(tts, options, parts[0])

    runs: dict[str, list[float]] = {k: [] for k in ("streamed gap", "whole ttfa", "streamed total", "at-end total",
                                                    "streamed after text", "at-end after text")}
    for _ in range(args.repeats):
        marks = streamed(tts, options, pieces, args.rate)
        runs["streamed gap"].append(marks["first audio"] - marks["sentence"])
        runs["streamed total"].append(marks["last audio"])
        runs["streamed after text"].append(marks["last audio"] - marks["text"])
        runs["whole ttfa"].append(whole_sentence_ttfa(tts, options, parts[0]))
        marks = sent_at_end(tts, options, pieces, args.rate)
        runs["at-end total"].append(marks["last audio"])
        runs["at-end after text"].append(marks["last audio"] - marks["text"])
        threading.Event().wait(0.2)  # let the machine settle between runs

    def med(name: str) -> float:
        return statistics.median(runs[name])

    def row(label: str, name: str) -> None:
        print(f"{label:58s} {1000 * med(name):9.0f} ms   runs: {', '.join(f'{1000 * t:.0f}' for t in runs[name])}")

    print()
    row("first sentence: end of its last token -> first audio", "streamed gap")
    row("first sentence sent whole: time to first audio", "whole ttfa")
    print(f"{'':58s} ratio {med('streamed gap') / med('whole ttfa'):.2f} (one token interval is "
          f"{1000 / args.rate:.0f} ms of it)")
    row("total, streamed while written: first token -> last audio", "streamed total")
    row("total, whole text sent at the end: first token -> last audio", "at-end total")
    row("  streamed: end of text -> last audio", "streamed after text")
    row("  at the end: end of text -> last audio", "at-end after text")
    print(f"{'':58s} streamed takes {med('streamed total') / med('at-end total'):.2f}× the time of sending at "
          "the end")


if __name__ == "__main__":
    main()
