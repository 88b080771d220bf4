"""The OpenAI-compatible speech server: the app and its routes (:mod:`.app`), the request and
response bodies and the app's options (:mod:`.schemas`), errors in OpenAI's shape (:mod:`.errors`),
the model's worker (:mod:`.worker`), middleware (:mod:`.middleware`), streamed response bodies
(:mod:`.streaming`), /openapi.json (:mod:`.openapi`), the page to try the voices (:mod:`.web`),
``voxtral-serve``'s configuration and command (:mod:`.config`, :mod:`.cli`) and Ray Serve
(:mod:`.ray_serve`)."""
