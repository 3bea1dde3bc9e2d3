"""The offline first tier: a grounded extractive responder over the retrieved passages.

It quotes the unit of the passages (a sentence, a list item, a table row with its column names) that
carries the fact the question asks for, chosen by the answer model's selector (semantic match of question
and unit, the question's rare terms in the same unit, the answer type: a number for "how many", a yes/no
statement for "can I"; serve_app/answers), cited [n]. Its stated confidence is the verifier's probability
that this quote answers the question. It never invents text: with no passage, or nothing quotable, it
says so at confidence 0 and the router escalates or abstains.
"""

from __future__ import annotations

import asyncio

from serve_app.answers.verify import NOT_FOUND, AnswerChecker
from serve_app.routing.providers.base import Completion, LLMProvider, Prompt, completion

EXTRACTIVE = "extractive-grounded"
__all__ = ["EXTRACTIVE", "NOT_FOUND", "ExtractiveResponder"]


class ExtractiveResponder(LLMProvider):
    vendor = "self-hosted"
    offline = True

    def __init__(self, model: str = EXTRACTIVE, checker: AnswerChecker | None = None):
        super().__init__(model)
        self._checker = checker

    @property
    def checker(self) -> AnswerChecker:
        """The answer model (the router's own, when the chat service shares it; else the bundled one)."""
        if self._checker is None:
            from serve_app.answers.verify import shared_checker

            self._checker = shared_checker()
        return self._checker

    @checker.setter
    def checker(self, value: AnswerChecker) -> None:
        self._checker = value

    def answer(self, prompt: Prompt) -> tuple[str, float]:
        """(quoted answer with its citation, the verifier's score of it); blocking (embeddings)."""
        if not prompt.context:
            return NOT_FOUND, 0.0
        text, score = self.checker.extractive(
            prompt.question, prompt.context, prompt.screen_lines, prompt.tenant_id
        )
        return text, round(score, 3)

    async def complete(self, prompt: Prompt, timeout_s: float) -> Completion:
        body, confidence = await asyncio.to_thread(self.answer, prompt)
        text = f"{body}\nConfidence: {confidence:.2f}"
        return completion(prompt, text, self.model, None, None, truncated=False, offline=True)
