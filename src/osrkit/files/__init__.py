"""Files osrkit writes and reads back: atomic writes and locks (``atomic``), strict
``config.json`` parsing (``config_json``), weight checksums (``integrity``) and which
folders ``--overwrite`` may replace (``ownership``)."""
