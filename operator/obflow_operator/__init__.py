"""The kopf operator reconciling ``DataPipeline`` resources (issues 7 and 8).

It lives in ``operator/obflow_operator`` and is imported as ``obflow_operator``: the folder
``operator/`` itself is never a package, so it cannot shadow Python's standard-library ``operator``.
"""
