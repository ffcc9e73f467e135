"""Chat templates: a registry of Jinja templates and rendering to (ids, loss mask)."""

from unitune.templates.registry import TEMPLATES, Template, get_template
from unitune.templates.render import render_messages, render_prompt, resolve_chat_template, show

__all__ = ["TEMPLATES", "Template", "get_template", "resolve_chat_template", "render_messages", "render_prompt", "show"]
