"""Slash commands typed in the input: parsed by ``commands``, carried out by the piece that owns each."""

from __future__ import annotations

from backends.core.errors import UsageError

from .. import commands
from .compare import Comparing
from .copying import copy_code, copy_reply
from .profiles import Profiles
from .registry import ModelRegistry
from .sessions import Sessions
from .turns import Turns


class SlashCommands:
    def __init__(self, app, turns: Turns, models: ModelRegistry, sessions: Sessions, profiles: Profiles, *,
                 chat, prompt_input, comparing: Comparing, tools) -> None:
        self.comparing = comparing
        self.tools = tools
        self.app = app
        self.turns = turns
        self.models = models
        self.sessions = sessions
        self.profiles = profiles
        self.chat = chat
        self.input = prompt_input

    async def run(self, parsed: commands.Parsed) -> bool:
        """Run a slash command; True keeps the input's text (it was put there to edit)."""
        name, arg = parsed.name, parsed.arg
        turns = self.turns
        if name == "clear":
            await turns.clear()
        elif name == "new":
            await turns.new_conversation()
        elif name == "system":
            return self.system(arg)
        elif name in ("set", "seed"):
            key, value = commands.parse_set(arg) if name == "set" else ("seed", arg or "")
            if name == "seed" and not value:
                raise UsageError("/seed needs a number", "for example: /seed 42 (or /seed none)")
            turns.set_params(turns.params.with_value(key, value))
            self.chat.add_notice(f"{key} = {getattr(turns.params, key)}")
        elif name == "params":
            self.chat.add_notice(", ".join(f"{k}={v}" for k, v in turns.params.to_json().items()))
        elif name == "model":
            if not arg:
                raise UsageError("/model needs a name or number", "for example: /model 2 — or press F2")
            self.models.switch_to(*commands.parse_model(arg))
        elif name == "models":
            self.models.open_picker()
        elif name == "regen":
            await turns.regenerate()
        elif name == "edit":
            await turns.edit_last()
            return True
        elif name == "stop":
            if not turns.stop():
                raise UsageError("nothing is being generated")
        elif name == "copy":
            (copy_code if arg == "code" else copy_reply)(self.app, self.chat)
        elif name == "save":
            self.sessions.export(*commands.parse_save(arg))
        elif name == "sessions":
            self.sessions.open_screen()
        elif name == "compare":
            self.comparing.command(arg)
        elif name == "keep":
            if not arg.isdigit():
                raise UsageError("/keep needs the number of a compared reply", "for example: /keep 2")
            self.comparing.keep(int(arg) - 1)
        elif name == "tools":
            self.tools.command(arg)
        elif name == "budget":
            turns.set_budget(arg)
        elif name == "profile":
            self.profiles.start(arg)
        elif name == "theme":
            if arg not in self.app.available_themes:
                raise UsageError(f"there is no theme '{arg}'", "Tab completes the names; or Ctrl+P → Theme")
            self.app.theme = arg
        elif name == "help":
            self.app.action_help()
        elif name == "quit":
            await self.app.action_quit()
        return False

    def system(self, arg: str) -> bool:
        """``/system``: with no text, put the current one in the input to edit; ``none`` removes it."""
        if not arg:
            self.input.load_text("/system " + (self.turns.conversation.system or ""))
            self.input.move_cursor(self.input.document.end)
            return True
        self.turns.set_system(None if arg.lower() == "none" else arg)
        return False
