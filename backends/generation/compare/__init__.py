"""Two to four models on one conversation: each one's reply, and where and how much they disagree.

``replies`` generates each model's reply (one after another on a shared device, at once
otherwise); ``pairs`` reads the reference's reply under every model, teacher-forced
(``reader``), and gives per token and per pair the figures of ``figures``, computed on
the device by ``divergence``; ``vocabulary`` says when two models cannot be compared
token by token, and ``words`` compares their replies as text whatever the vocabulary.
"""
