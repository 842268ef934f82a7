from osrkit.cli import main

raise SystemExit(main())
