"""``osrkit perf``: speed measured side by side in one run (``speed``, ``training_speed``,
``pretrained_speed``) and the HTTP service's load test (``serve_load``)."""
