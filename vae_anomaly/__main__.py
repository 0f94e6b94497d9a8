"""``python -m vae_anomaly`` runs the command-line tool."""

from .cli import main

main()
