"""PyTorch reference modules of Voxtral-4B-TTS-2603 and checkpoint loading (imports torch)."""
