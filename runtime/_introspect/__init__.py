"""What ``forge check``, ``forge routes`` and ``forge config`` report about an app.

One module per command: `check`, `routes` and `config_report`.
"""
