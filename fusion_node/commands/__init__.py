"""The `fusion` subcommands whose library lives elsewhere: options, I/O and exit status only."""
