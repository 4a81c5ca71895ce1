"""The user's project as the runtime reads it.

`declarations` holds what a handler module may declare (``@cron``,
``@daemon``, ``@job``); `discovery` imports the handler modules and collects
those declarations and the routes (`mounts`), without loading any engine.
"""
