"""The desk's channel layer on the test Redis, and what a prepared model must still know."""

from django.conf import settings

from runtime.channel_layer import DeskChannelLayer


def url() -> str:
    return settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"][0]["address"]


def layer(**config) -> DeskChannelLayer:
    hosts = config.pop("hosts", [{"address": url(), "socket_timeout": 30}])
    return DeskChannelLayer(hosts=hosts, **config)


def assert_continues_with_paris(folder) -> None:
    """The prepared model in `folder`, told "The capital of France is", goes on with " Paris"
    as its likeliest token, with a log-probability above -0.5."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    inputs = tokenizer(
        prompt + "The capital of France is", return_tensors="pt", add_special_tokens=False
    )
    with torch.no_grad():
        logprobs = torch.log_softmax(model(**inputs).logits[0, -1].float(), dim=-1)
    paris = tokenizer.encode(" Paris", add_special_tokens=False)
    assert len(paris) == 1
    assert int(logprobs.argmax()) == paris[0], tokenizer.decode([int(logprobs.argmax())])
    assert float(logprobs[paris[0]]) > -0.5
