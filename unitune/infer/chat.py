"""`unitune infer` without `--infer.input`: a chat in the terminal.

Tokens stream as they are generated; the conversation is kept and sent whole
each turn. Commands: `/clear` forgets the conversation, `/system TEXT` sets the
system prompt (and clears), `/exit` (or Ctrl-D) quits. Ctrl-C during an answer
stops that answer and keeps what was said so far.
"""

import sys

from unitune.errors import UnituneError
from unitune.infer.rows import with_system

HELP = "commands: /clear (forget the conversation), /system TEXT (set the system prompt), /exit"


def chat(engine, params, *, system: str | None = None, name: str = "model", out=sys.stdout) -> int:
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    print(f"unitune: chatting with {name}. {HELP}", file=out, flush=True)
    history: list[dict] = []
    while True:
        try:
            line = input(">>> ")
        except EOFError:
            print(file=out)
            return 0
        except KeyboardInterrupt:
            print(file=out)
            continue
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit", "/bye"):
            return 0
        if text == "/clear":
            history = []
            print("(conversation cleared)", file=out, flush=True)
            continue
        if text == "/system" or text.startswith("/system "):
            system, history = text[len("/system"):].strip() or None, []
            print(f"(system prompt {'set' if system else 'removed'}; conversation cleared)", file=out, flush=True)
            continue
        if text.startswith("/"):
            print(f"(unknown command {text.split()[0]}; {HELP})", file=out, flush=True)
            continue
        turn = {"role": "user", "content": line}
        answer = _answer(engine, params, with_system(history + [turn], system), out)
        if answer is not None:
            history += [turn, {"role": "assistant", "content": answer}]


def _answer(engine, params, messages: list[dict], out) -> str | None:
    try:
        request = engine.submit(engine.encode_chat(messages), params)
    except UnituneError as err:
        print(f"(error: {err}; /clear starts a new conversation)", file=out, flush=True)
        return None
    try:
        for delta in request:
            out.write(delta)
            out.flush()
    except KeyboardInterrupt:
        request.cancel()
        print(" [stopped]", end="", file=out)
    completion = request.result()
    print(file=out, flush=True)
    if completion.finish_reason == "error":
        print(f"(generation failed: {completion.error})", file=out, flush=True)
        return None
    return completion.text
