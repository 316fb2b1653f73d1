"""shiftpool.hw.controller: the units of the layer-program controller.

:class:`~shiftpool.hw.accelerator.Accelerator` connects them (the schedule they keep
is in its module docstring and in :mod:`shiftpool.sw.compile.cycles`):

* :mod:`.memory_bank`: every memory, its ports and their arbitration, with readback;
* :mod:`.sequencer`: the state machine: input loader, layer program walk, outputs;
* :mod:`.issue`: a layer's positions walked, beats to the engine or window reads to
  the max-pool, and the result groups' data;
* :mod:`.writeback`: a lane group's result -> bias add, requantizer -> memory writes;
* :mod:`.maxpool`: 2x2 windows read through the activation ports -> their maxima;
* :mod:`.readback`: rows of the load regions read back for the link;
* :mod:`.table_build`: the pool engine's lookup-table build from loaded pool rows;
* :mod:`.generate`: the MLG generate phase (the weight generator's requests).

:mod:`.layouts` holds the payloads they share.
"""
