from __future__ import annotations

from django.apps import AppConfig


class AssistantConfig(AppConfig):
    name = "assistant"
    verbose_name = "Assistant"

    def ready(self) -> None:
        # The ledger vouches for the answers people saw; verification compares them.
        from assistant.answer_record import answer_rows_problem
        from audit.verify import vouched_rows_check_register

        vouched_rows_check_register(answer_rows_problem)

        # Once an answer is recorded, how well its citations support it is measured aside.
        from django.db.models.signals import post_save

        from assistant.insight.support import answer_recorded
        from assistant.models import Answer

        post_save.connect(answer_recorded, sender=Answer, dispatch_uid="answer-support")
