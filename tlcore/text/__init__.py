"""GPT-2 through KerasHub: load, generate with a chosen sampler, fine-tune on your own text.

Models come from a KerasHub preset name (downloaded once), an ``hf://`` checkpoint, or a
local preset directory (what fine-tuning saves). Loaded models are cached per process
and per quantization. Fine-tuning runs as a job with the same
:class:`~tlcore.jobs.ProgressLog` as image training, so the dashboard draws its
loss/perplexity chart the same way.

Modules: ``sampling`` (sampler settings), ``models`` (load, build, quantize),
``generation`` (compiled generate per setting, XLA choice), ``finetuning`` (the job),
``quality`` (what int8 costs). Nothing is imported here: each name is imported from
the module that owns it.
"""
