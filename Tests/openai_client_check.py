#!/usr/bin/env python3
"""Checks a running Pagoda server with the official `openai` client.

    pip install openai
    python3 Tests/openai_client_check.py --base-url http://127.0.0.1:8000/v1 [--api-key KEY] [--model NAME]

Exercises completions, chat, streaming chat (with usage), n=2, logprobs and one error case.
Exits non-zero on the first failure.
"""
import argparse
import sys

import openai


def check(condition, what):
    if not condition:
        print(f"FAIL: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--api-key", default="none")
    parser.add_argument("--model", default=None, help="served model name (default: the first of /v1/models)")
    args = parser.parse_args()
    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0, timeout=120)

    models = client.models.list().data
    check(len(models) >= 1, "GET /v1/models lists a model")
    model = args.model or models[0].id

    completion = client.completions.create(model=model, prompt="The capital of France is", max_tokens=8, temperature=0)
    check(completion.object == "text_completion" and completion.id.startswith("cmpl-"), "completion object and id")
    check(len(completion.choices) == 1 and completion.choices[0].finish_reason in ("stop", "length"), "completion choice")
    check(completion.usage.completion_tokens >= 1 and completion.usage.total_tokens
          == completion.usage.prompt_tokens + completion.usage.completion_tokens, "completion usage")

    again = client.completions.create(model=model, prompt="The capital of France is", max_tokens=8, temperature=0)
    check(again.choices[0].text == completion.choices[0].text, "greedy completions are deterministic")

    chat = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Say hello."}], max_tokens=12, temperature=0)
    check(chat.object == "chat.completion" and chat.choices[0].message.role == "assistant", "chat completion")
    check(isinstance(chat.choices[0].message.content, str) and chat.usage.prompt_tokens > 0, "chat content and usage")

    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Say hello."}], max_tokens=12, temperature=0,
        stream=True, stream_options={"include_usage": True})
    text, roles, reasons, usage = "", [], [], None
    for chunk in stream:
        if chunk.object != "chat.completion.chunk":
            check(False, f"chunk object is {chunk.object}")
        for choice in chunk.choices:
            if choice.delta.role:
                roles.append(choice.delta.role)
            text += choice.delta.content or ""
            if choice.finish_reason:
                reasons.append(choice.finish_reason)
        if chunk.usage is not None:
            usage = chunk.usage
    check(roles == ["assistant"], "streamed chat starts with the assistant role")
    check(text == chat.choices[0].message.content, "streamed chat text equals the non-streamed text")
    check(len(reasons) == 1, "one finish_reason in the stream")
    check(usage is not None and usage.completion_tokens == chat.usage.completion_tokens, "usage in the last chunk")

    several = client.completions.create(
        model=model, prompt="Once upon a time", max_tokens=6, n=2, temperature=0.9, seed=1,
        extra_body={"ignore_eos": True})
    check(sorted(c.index for c in several.choices) == [0, 1], "n=2 gives two choices")
    check(several.usage.completion_tokens == 12, "n=2 usage counts both choices")

    scored = client.completions.create(model=model, prompt="Hello", max_tokens=3, temperature=0, logprobs=2,
                                       extra_body={"ignore_eos": True})
    lp = scored.choices[0].logprobs
    check(len(lp.tokens) == 3 and len(lp.token_logprobs) == 3 and all(x <= 0 for x in lp.token_logprobs),
          "completion logprobs")
    check(all(1 <= len(t) <= 2 for t in lp.top_logprobs), "completion top_logprobs")

    chat_lp = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=3, temperature=0,
        logprobs=True, top_logprobs=2, extra_body={"ignore_eos": True})
    content = chat_lp.choices[0].logprobs.content
    check(len(content) == 3 and all(len(t.top_logprobs) == 2 for t in content), "chat logprobs")

    try:
        client.completions.create(model="no-such-model", prompt="Hi", max_tokens=1)
        check(False, "unknown model is refused")
    except openai.NotFoundError as error:
        check(error.status_code == 404, "unknown model gives 404 NotFoundError")
    try:
        client.completions.create(model=model, prompt="Hi", max_tokens=1, temperature=-1)
        check(False, "negative temperature is refused")
    except openai.BadRequestError as error:
        check(error.status_code == 400, "negative temperature gives 400 BadRequestError")

    print("all checks passed")


if __name__ == "__main__":
    main()
