"""``python -m cmedit`` (and ``accelerate launch -m cmedit ...``): the command line."""

from cmedit.cli.launch import run_main

if __name__ == "__main__":
    run_main()
