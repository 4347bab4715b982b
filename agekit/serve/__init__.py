"""`agekit serve`: the HTTP service (FastAPI + uvicorn) and its web page, over agekit.runtime.AgeEstimator.

Modules: settings (ServeSettings: limits, keys, CORS), body (bounded, in-memory request bodies: multipart,
JSON with base64, raw image bytes), inference (the bounded pool that runs the estimator off the event loop
and sheds load with 503), errors (JSON error bodies with stable codes), metrics (Prometheus), app
(create_app: routes, middleware, structured logs), static/ (the web page). See docs/serve.md.

Importing this package imports nothing heavy; FastAPI is imported by agekit.serve.app only.
"""
