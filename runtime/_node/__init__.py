"""A node's life: boot, serve, drain, stop.

`boot` imports the handlers and migrates (`migrations`) before anything
serves; `server` runs Granian around the workers and drains on SIGTERM;
`lifecycle` is the node in its main process (registry heartbeat,
deregistration); `background` runs its crons, daemons and job workers;
`worker` is a node without HTTP (``schedule:work``, ``jobs:work``); `wakeup`
is the event their signal handlers set.
"""
