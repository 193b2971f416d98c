"""Allow `python -m pvc_cli`."""

from pvc_cli.main import main

if __name__ == "__main__":
    main()
