from coinfer.cli import main

raise SystemExit(main())
