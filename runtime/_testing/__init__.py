"""What `runtime.testing` is made of: a project's app booted in the test's process on a
database of its own (a copy of a template migrated once per session), with its clock,
its ``ctx.env`` and its background work in the test's hands."""
