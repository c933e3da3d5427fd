"""The synthetic Recipe1M stand-in (the CPU default): vocabulary tables (``vocab``), recipe text
(``text``), image rendering (``render``), the seeded plan of every recipe (``plan``) and the
writer of the Recipe1M-format files (``write``: :func:`malm.synth.write.generate`)."""
