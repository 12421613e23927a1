"""DDP mixed-precision fine-tuning of encoders (any ``AutoModel`` with a fast tokenizer) on prep's Arrow features.

Run ``python -m train --help`` (or ``torchrun --nproc-per-node N -m train ...``); from code,
:func:`train.loop.train` with a :class:`train.config.TrainConfig` and a
:class:`train.dist.DistEnv`. Load a result with :func:`train.model.load_finetuned`.

Output folder (``--out``), what later stages may rely on:

- ``model/``: the fine-tuned encoder, ``save_pretrained`` form (``model.safetensors`` +
  ``config.json``, the ``AutoModel`` encoder - ``BertModel``, ``MPNetModel``, ... - without
  pooler) plus the tokenizer files of the source model folder, so
  ``AutoTokenizer.from_pretrained(OUT/model)`` and ``AutoModel.from_pretrained(OUT/model)`` both work. With the
  segmentation head this is the resized encoder (``type_vocab_size`` 4).
- ``head.safetensors``: ``model.head.state_dict()`` (metadata: task, head).
- ``train_config.json``: every :class:`~train.config.TrainConfig` field (``task``, ``head``,
  ``model_dir`` = the source model folder, ``features_dir``, ``eval_features_dir``,
  ``precision``, batch sizes, ...) plus ``max_seq_length`` (from the features manifest),
  ``micro_batch_size``, ``accumulation_steps``, ``tokenizer`` (the manifest's record) and
  ``schema_version``. Written at the start of a run.
- ``checkpoints/last.pt``: see :mod:`train.checkpoint`; ``--resume`` continues from it.
- ``tb/``: TensorBoard logs. ``progress.json``: the latest step (for the Luigi task).
- ``metrics.json``: written last (its presence means the run finished): ``final_train_loss``,
  ``train_loss_history``, ``eval`` (one record per evaluation; both cover a resumed run's steps
  before the resume too), ``final_eval``, ``resumed_from_step``,
  ``wall_seconds`` (a resumed run's includes each earlier process's time up to its last
  checkpoint; ``wall_seconds_this_process`` is this one's), ``throughput`` (sequences/s, real
  tokens/s, padding fraction; this process's steps) and the batch layout.
"""
