"""`tritonize peers`: tritonize beside Mosec and LitServe (compare.py), the peers' venvs (envs.py),
the comparison's report (report.py) and the apps the peers run (peer_apps/, shipped as files)."""
