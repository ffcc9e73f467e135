"""Built-in chat templates, for tokenizers that lack one and for base models.

Every template is a Jinja chat template string, the same format as
`tokenizer.chat_template`, so the tokenizer's own template and these go
through one code path (`tokenizer.apply_chat_template`). A template reads
`messages` (roles system / user / assistant / tool; an assistant message may
carry OpenAI-style `tool_calls`), `tools` (JSON-schema function dicts),
`add_generation_prompt`, `bos_token` and `eos_token`.

Deliberate choices, written from the published formats:
- Tools and tool calls use the Hermes convention (as Qwen2.5 does) in every
  template except llama3 (JSON calls, `ipython` results) and mistral
  (`[AVAILABLE_TOOLS]`, `[TOOL_CALLS]`, `[TOOL_RESULTS]`).
- mistral and gemma fold a system message into the next user turn; mistral
  lists the tools once, before the first `[INST]` (the official v3 template
  puts them before the last one, which rewrites earlier turns).
- Where an answer follows text without a newline (mistral, default) the
  separating space belongs to the answer, so the generation prompt never ends
  in a space that the training text tokenizes differently.
- `stop` lists strings that end an answer besides the tokenizer's eos.
"""

from dataclasses import dataclass, field

from unitune.errors import UnituneError, suggest


@dataclass(frozen=True)
class Template:
    name: str
    chat_template: str
    stop: list[str] = field(default_factory=list)
    description: str = ""


TEMPLATES: dict[str, Template] = {}


def register(name: str, *, stop: list[str], description: str):
    """Decorator: register the Jinja string returned by a zero-argument function."""

    def wrap(build):
        TEMPLATES[name] = Template(name, build(), list(stop), description)
        return build

    return wrap


def get_template(name: str) -> Template:
    if name not in TEMPLATES:
        raise UnituneError(
            f"unknown chat template '{name}'{suggest(name, TEMPLATES)}; known: {', '.join(TEMPLATES)}"
        )
    return TEMPLATES[name]


# Shared macros: the Hermes tool list (Qwen2.5's wording) and tool calls.
_HERMES = r"""
{%- macro hermes_tools(tools) %}
    {{- '# Tools\n\nYou may call one or more functions to assist with the user query.\n\n' }}
    {{- 'You are provided with function signatures within <tools></tools> XML tags:\n<tools>' }}
    {%- for tool in tools %}
        {{- '\n' + (tool | tojson) }}
    {%- endfor %}
    {{- '\n</tools>\n\nFor each function call, return a json object with function name and arguments '
        'within <tool_call></tool_call> XML tags:\n<tool_call>\n'
        '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>' }}
{%- endmacro %}
{%- macro json_args(fn) %}
    {%- if fn.arguments is string %}{{- fn.arguments }}{%- else %}{{- fn.arguments | tojson }}{%- endif %}
{%- endmacro %}
{%- macro hermes_calls(calls) %}
    {%- for call in calls %}
        {%- set fn = call.function if call.function is defined else call %}
        {{- ('\n' if not loop.first else '') + '<tool_call>\n{"name": "' + fn.name + '", "arguments": ' }}
        {{- json_args(fn) + '}\n</tool_call>' }}
    {%- endfor %}
{%- endmacro %}
"""

# ChatML with Hermes tools; @SYSTEM@ is the default system prompt ('' for none).
_CHATML = r"""
{%- set has_system = messages | length > 0 and messages[0].role == 'system' %}
{%- set system = messages[0].content if has_system else '@SYSTEM@' %}
{%- if tools %}
    {{- '<|im_start|>system\n' + (system + '\n\n' if system else '') + hermes_tools(tools) + '<|im_end|>\n' }}
{%- elif system %}
    {{- '<|im_start|>system\n' + system + '<|im_end|>\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if message.role == 'assistant' and message.tool_calls %}
        {{- '<|im_start|>assistant' + ('\n' + message.content if message.content else '') }}
        {{- '\n' + hermes_calls(message.tool_calls) + '<|im_end|>\n' }}
    {%- elif message.role == 'tool' %}
        {%- if loop.first or loop.previtem.role != 'tool' %}{{- '<|im_start|>user' }}{%- endif %}
        {{- '\n<tool_response>\n' + message.content + '\n</tool_response>' }}
        {%- if loop.last or loop.nextitem.role != 'tool' %}{{- '<|im_end|>\n' }}{%- endif %}
    {%- elif not (loop.first and has_system) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""


@register("chatml", stop=["<|im_end|>"], description="ChatML (<|im_start|>role ... <|im_end|>), Hermes tool calls")
def _chatml():
    return _HERMES + _CHATML.replace("@SYSTEM@", "")


QWEN_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."


@register("qwen2.5", stop=["<|im_end|>"], description="Qwen2.5: ChatML with a default system prompt and tools")
def _qwen25():
    return _HERMES + _CHATML.replace("@SYSTEM@", QWEN_SYSTEM)


@register("llama3", stop=["<|eot_id|>", "<|eom_id|>"], description="Llama 3 headers; JSON tool calls")
def _llama3():
    return _HERMES + r"""
{{- bos_token or '' }}
{%- set has_system = messages | length > 0 and messages[0].role == 'system' %}
{%- if has_system or tools %}
    {{- '<|start_header_id|>system<|end_header_id|>\n\n' + (messages[0].content if has_system else '') }}
    {%- if tools %}
        {{- ('\n\n' if has_system else '') + 'You have access to the following functions. To call a function, '
            'respond with JSON of the form {"name": function name, "parameters": dictionary of argument '
            'name and its value}.' }}
        {%- for tool in tools %}{{- '\n\n' + (tool | tojson) }}{%- endfor %}
    {%- endif %}
    {{- '<|eot_id|>' }}
{%- endif %}
{%- for message in messages %}
    {%- if not (loop.first and has_system) %}
        {%- set role = 'ipython' if message.role == 'tool' else message.role %}
        {{- '<|start_header_id|>' + role + '<|end_header_id|>\n\n' + (message.content or '') }}
        {%- for call in message.tool_calls or [] %}
            {%- set fn = call.function if call.function is defined else call %}
            {{- ('\n' if message.content or not loop.first else '') }}
            {{- '{"name": "' + fn.name + '", "parameters": ' + json_args(fn) + '}' }}
        {%- endfor %}
        {{- '<|eot_id|>' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"""


@register("mistral", stop=["[INST]"],
          description="Mistral [INST] ... [/INST] answer</s>; system joins the next user turn")
def _mistral():
    return _HERMES + r"""
{{- bos_token or '' }}
{%- set ns = namespace(system='', tools_done=false) %}
{%- for message in messages %}
    {%- if message.role == 'system' %}
        {%- set ns.system = message.content %}
    {%- elif message.role == 'user' %}
        {%- if tools and not ns.tools_done %}
            {{- '[AVAILABLE_TOOLS] ' + (tools | tojson) + '[/AVAILABLE_TOOLS]' }}
            {%- set ns.tools_done = true %}
        {%- endif %}
        {{- '[INST] ' + (ns.system + '\n\n' if ns.system else '') + message.content + ' [/INST]' }}
        {%- set ns.system = '' %}
    {%- elif message.role == 'tool' %}
        {{- '[TOOL_RESULTS] ' + message.content + '[/TOOL_RESULTS]' }}
    {%- else %}
        {{- ' ' + message.content if message.content else '' }}
        {%- if message.tool_calls %}
            {{- '[TOOL_CALLS] [' }}
            {%- for call in message.tool_calls %}
                {%- set fn = call.function if call.function is defined else call %}
                {{- (', ' if not loop.first else '') + '{"name": "' + fn.name + '", "arguments": ' }}
                {{- json_args(fn) + '}' }}
            {%- endfor %}
            {{- ']' }}
        {%- endif %}
        {{- eos_token or '' }}
    {%- endif %}
{%- endfor %}
"""


@register("gemma", stop=["<end_of_turn>"],
          description="Gemma <start_of_turn>user/model; system joins the next user turn")
def _gemma():
    return _HERMES + r"""
{{- bos_token or '' }}
{%- set ns = namespace(system=hermes_tools(tools) if tools else '') %}
{%- for message in messages %}
    {%- if message.role == 'system' %}
        {%- set ns.system = ns.system + ('\n\n' if ns.system else '') + message.content %}
    {%- else %}
        {%- set model = message.role == 'assistant' %}
        {{- '<start_of_turn>' + ('model' if model else 'user') + '\n' }}
        {%- if not model and ns.system %}
            {{- ns.system + '\n\n' }}
            {%- set ns.system = '' %}
        {%- endif %}
        {%- if message.role == 'tool' %}
            {{- '<tool_response>\n' + message.content + '\n</tool_response>' }}
        {%- else %}
            {{- message.content or '' }}
            {%- if message.tool_calls %}
                {{- ('\n' if message.content else '') + hermes_calls(message.tool_calls) }}
            {%- endif %}
        {%- endif %}
        {{- '<end_of_turn>\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<start_of_turn>model\n' }}
{%- endif %}
"""


@register("phi3", stop=["<|end|>"], description="Phi-3 <|system|>/<|user|>/<|assistant|> ... <|end|>")
def _phi3():
    return _HERMES + r"""
{%- set has_system = messages | length > 0 and messages[0].role == 'system' %}
{%- if has_system or tools %}
    {{- '<|system|>\n' + (messages[0].content if has_system else '') }}
    {{- ('\n\n' if has_system and tools else '') + (hermes_tools(tools) if tools else '') + '<|end|>\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if message.role == 'tool' %}
        {{- '<|user|>\n<tool_response>\n' + message.content + '\n</tool_response><|end|>\n' }}
    {%- elif not (loop.first and has_system) %}
        {{- '<|' + message.role + '|>\n' + (message.content or '') }}
        {%- if message.tool_calls %}
            {{- ('\n' if message.content else '') + hermes_calls(message.tool_calls) }}
        {%- endif %}
        {{- '<|end|>\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|assistant|>\n' }}
{%- endif %}
"""


@register("default", stop=["\n\nUser:"], description="plain 'User: ... Assistant: ...<eos>' for base models")
def _default():
    return _HERMES + r"""
{%- set has_system = messages | length > 0 and messages[0].role == 'system' %}
{%- if has_system or tools %}
    {{- 'System: ' + (messages[0].content if has_system else '') + ('\n\n' if has_system and tools else '') }}
    {{- (hermes_tools(tools) if tools else '') + '\n\n' }}
{%- endif %}
{%- for message in messages %}
    {%- if message.role == 'assistant' %}
        {{- 'Assistant:' + (' ' + message.content if message.content else '') }}
        {%- if message.tool_calls %}
            {{- ('\n' if message.content else ' ') + hermes_calls(message.tool_calls) }}
        {%- endif %}
        {{- (eos_token or '') + '\n\n' }}
    {%- elif not (loop.first and has_system) %}
        {{- (message.role | capitalize) + ': ' + message.content + '\n\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- 'Assistant:' }}
{%- endif %}
"""
