"""Process reward models: a LoRA adapter (peft) on a causal LM that reads a reward at every step tag.

The model sees ``prompt + separator + step_1 + TAG + step_2 + TAG + …`` and the reward of step k is the probability
of the *good* token against the *bad* one (``+`` / ``-``) at the last token of the k-th tag, as Math-Shepherd and
OpenR score steps: ``softmax(logits[[good, bad]])[0]``, which is ``sigmoid(logit_good - logit_bad)``.

- ``adapters.prm.format`` — the step-tag format and how a rollout becomes token ids (pure, no torch);
- ``adapters.prm.examples`` — training examples from a ``stepwise`` dataset or from the API's labels: hard 0/1,
  soft floats, neutral code 2 (pure, no torch);
- ``adapters.prm.modeling`` — loading a base model (hub name, local folder, ``.gguf`` file), LoRA, the batched
  step-tag forward pass;
- ``adapters.prm.training`` — training, held-out evaluation (loss, step accuracy, ProcessBench F1), saving and zipping;
- ``adapters.prm.training_run`` — what ``train_prm`` does end to end: load the examples, train, upload;
- ``adapters.prm.archive`` — the adapter zip: writing it, checking and unpacking a downloaded one;
- ``adapters.prm.inference_worker`` — the PRM inference controller's loop (an HTTP client of the server).

Nothing here imports Django: the commands ``train_prm`` and ``prm_label_worker`` run on any machine that reaches the
server.
"""
