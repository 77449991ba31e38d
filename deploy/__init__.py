"""Deploying beyond one machine: container, Kubernetes and KServe objects from one spec.

:mod:`aln.deploy.spec` checks the spec; :mod:`aln.deploy.render` writes the files.
"""
