from .cli._app import main

main()
