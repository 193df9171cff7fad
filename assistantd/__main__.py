from assistantd.cli import main

raise SystemExit(main())
