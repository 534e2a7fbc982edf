"""Publishing compressed checkpoints: model cards (:mod:`.card`), Hub uploads (:mod:`.push`) and the
checkpoint-folder helpers the `llava-fa` command line shares (:mod:`.checkpoint`)."""
