"""``python -m b200lab [run|sync|report|power] ...``: the same as the ``b200lab`` command."""

from b200lab.cli import main

if __name__ == "__main__":
    main()
