"""asv's results across environments: reading them, selecting sides, the upgrade gate, the table.

asv graphs each benchmark against commits, one environment at a time; this
package puts the environments side by side instead.  One module per job:

- :mod:`.results` reads asv's results directory (values, spread, machines);
- :mod:`.versions` the exact versions each environment recorded;
- :mod:`.metrics` which benchmarks are copy metrics, and their parameters;
- :mod:`.selectors` selectors (``python=3.12,numpy=2.2``) and the pairing of two sides;
- :mod:`.gate` what counts as a change, and the comparison of two sides;
- :mod:`.table` the cross-environment table of one commit;
- :mod:`.config` the paths an asv configuration names.

It uses the standard library only (no numpy, none of the measuring code), so
results can be read wherever they were gathered.  The outputs are in
:mod:`cowmem.reporters`.
"""
