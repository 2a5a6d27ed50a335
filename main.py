"""python main.py [app options] -> the desktop app; python main.py COMMAND -> the headless CLI."""
import sys

from app.launcher import main

if __name__ == "__main__":
    sys.exit(main())
