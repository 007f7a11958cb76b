from migtui.cli import main

raise SystemExit(main())
