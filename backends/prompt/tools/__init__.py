"""Tools a model may call: their definitions, how each family puts them in the prompt, and how a
call is read back from a reply. Text work only: running a tool is someone else's job."""
