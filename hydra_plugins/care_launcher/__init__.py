"""CARE's submitit launchers (see care_launcher.py); Hydra finds plugins only under hydra_plugins."""
