"""The wiring points and the command line: ``service`` builds the pool's
service tree, ``payouts`` the payout process's, ``cli`` is ``hashcoop``,
``payouts_cli`` its ``payouts`` subcommands and ``status`` its ``status``."""
