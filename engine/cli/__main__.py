"""``python -m engine.cli`` runs the headless CLI."""
import sys

from engine.cli.main import main

sys.exit(main())
