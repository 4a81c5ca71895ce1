"""Deployment files generated from the configuration: ``forge deploy:docker``, ``deploy:k8s``.

`docker.dockerfile`, `docker.compose` and `k8s.manifests` return file contents
as strings; `files.write_files` puts them on disk under the --force rule.
"""
