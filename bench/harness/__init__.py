"""The shared harness of the benchmarks in bench/: each benchmark is a short script on these modules.

Every module has one job and the lower ones import none of the higher:

* ``common``: where things are, the loopback host, ``BenchError``, logging, free ports, a plain GET;
* ``options``: the pixel benchmark's command line (soak.py and faults.py reuse its defaults);
* ``cpu``: CPU accounting from /proc (a process tree, each core, waiting for an idle machine);
* ``processes``: children pinned to a core, each in its own process group, stopped however a run ends;
* ``stores``: deadpixel's store prepared once and copied fresh for every run (SQLite or a PostgreSQL schema);
* ``mix``: the requests a load sends (bare GETs, or the realistic mix of addresses and user agents);
* ``servers``: deadpixel, nginx's ``empty_gif`` and the naive tracker, started and probed;
* ``counters``: deadpixel's own group-commit counters;
* ``load``: wrk at saturation (closed loop) and steady_load.py at a fixed rate (open loop);
* ``runs``: one server from start to finish, and what it stored;
* ``verdict`` and ``output``: the pixel benchmark's checks, warnings, tables and JSON.

The scripts run as ``python bench/<name>.py``, which puts bench/ on ``sys.path``: that is how they find
this package, with no install.
"""
