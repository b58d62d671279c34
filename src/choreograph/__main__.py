"""`python -m choreograph`: the command line."""

from .cli._app import main

main()
