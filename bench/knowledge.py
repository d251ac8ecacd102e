"""`python -m bench.knowledge [--passages N]`: how long one knowledge search takes on a large
synthetic index (half English, half Chinese passages, spread over 20 sites and the shared
articles), without the database or Redis: the index's own cost, which runs in a thread per
question. Prints the build time and the p50/p99 of a search."""

import argparse
import os
import random
import statistics
import time

# Words a shop's help centre uses; the rest of the vocabulary is made-up words, so the index
# has a realistic long tail of rare terms.
_EN_WORDS = (
    "order shipping delivery parcel tracking return refund exchange warranty repair "
    "payment invoice card account address customs duties carrier label discount "
    "code gift voucher battery charger speaker lamp size colour stock price tax "
    "business days week month store pickup locker damage missing late cancel"
).split()
_ZH_WORDS = (
    "订单 配送 运费 快递 物流 包裹 退货 退款 换货 保修 维修 付款 支付 "
    "发票 账户 地址 海关 关税 承运商 面单 优惠码 礼品卡 电池 充电器 音箱 "
    "台灯 尺寸 颜色 库存 价格 税费 企业 工作日 自提点 快递柜 损坏 丢失 "
    "延误 取消 签收 商品 顾客 客服 申请 邮件 链接 银行卡 余额 验证"
).split()
_SYLLABLES = "ka lo mi ne tu ra sen dor vil pa qua ber ton lis mar fe gu zo".split()
_CHARS = (
    "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动"
    "同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自"
    "二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日"
    "那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变"
    "条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总"
    "次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指"
    "几九区强放决西被干做必战先回则任取据处队南给色光门即保治北造百规热领七海口东导器"
    "压志世金增争济阶油思术极交受联什认六共权收证改清己美再采转更单风切打白教速花带安"
    "场身车例真务具万每目至达走积示议声报斗完类八离华名确才科张信马节话米整空元况今集"
    "温传土许步群广石记需段研界拉林律叫且究观越织装影算低持音众书布复容儿须际商非验连"
    "断深难近矿千周委素技备半办青省列习响约支般史感劳便团往酸历市克何除消构府称太准精"
    "值号率族维划选标写存候毛亲快效斯院查江型眼王按格养易置派层片始却专状育厂京识适属"
    "圆包火住调满县局照参红细引听该铁价严"
)


def _word(rng: random.Random) -> str:
    if rng.random() < 0.6:
        return rng.choice(_EN_WORDS)
    return "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4)))


def _zh_text(rng: random.Random, n: int) -> str:
    parts = []
    for _ in range(n):
        parts.append(
            rng.choice(_ZH_WORDS)
            if rng.random() < 0.5
            else "".join(rng.choice(_CHARS) for _ in range(rng.randint(1, 3)))
        )
        if rng.random() < 0.1:
            parts.append("，")
    return "".join(parts) + "。"


def _django() -> None:
    # The knowledge modules import the models: Django must be set up first.
    import django
    from django.apps import apps

    if not apps.ready:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cs_site.settings")
        django.setup()


def synthetic_rows(passages: int, seed: int = 0) -> list:
    _django()
    from chat.knowledge.selectors import PassageRow

    rng = random.Random(seed)
    rows = []
    for i in range(passages):
        site = rng.choice([None, *range(1, 21)])
        if i % 2:
            text = _zh_text(rng, rng.randint(40, 120))
            title, language = _zh_text(rng, 3), "zh"
        else:
            text = " ".join(_word(rng) for _ in range(rng.randint(60, 160))) + "."
            title, language = " ".join(_word(rng) for _ in range(3)), "en"
        rows.append(
            PassageRow(
                passage_id=i + 1,
                article_id=i // 5 + 1,
                title=title,
                slug="",
                source_url="",
                heading="",
                text=text,
                site_id=site,
                language=language,
            )
        )
    return rows


def bench_retrieval(passages: int = 10_000, queries: int = 1000, seed: int = 0) -> dict:
    """Build a synthetic index of `passages` and time `queries` searches (each made of a few
    words of one passage, asked on that passage's site, in its language)."""
    rows = synthetic_rows(passages, seed)
    from chat.knowledge.retrieval import Cut, KnowledgeIndex

    rng = random.Random(seed + 1)
    started = time.perf_counter()
    index = KnowledgeIndex(rows)
    build_s = time.perf_counter() - started
    cut = Cut(min_score=1.0, min_coverage=0.3, relative=0.4)
    times, hits = [], 0
    for _ in range(queries):
        row = rng.choice(rows)
        if row.language == "zh":
            start = rng.randrange(max(1, len(row.text) - 12))
            question = row.text[start : start + 12] + "怎么办？"
        else:
            words = row.text.rstrip(".").split()
            question = "How do I " + " ".join(rng.sample(words, min(5, len(words)))) + "?"
        started = time.perf_counter()
        found = index.search(
            question=question, site_id=row.site_id, language=row.language, limit=3, cut=cut
        )
        times.append((time.perf_counter() - started) * 1000)
        hits += bool(found)
    times.sort()
    return {
        "passages": passages,
        "build_s": round(build_s, 2),
        "p50_ms": round(times[len(times) // 2], 3),
        "p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))], 3),
        "mean_ms": round(statistics.fmean(times), 3),
        "queries_with_hits": hits / queries,
    }


def run(bench) -> dict:
    """Part 4 of `python -m bench`: the shipped question set on the sample help centre (recall
    and time per search, from `manage.py eval_knowledge`) and a search on 10,000 passages."""
    import subprocess
    import sys

    from tqdm import tqdm

    from bench.processes import ROOT

    tqdm.write("  importing the sample help centre and running its question set")
    bench.manage("import_knowledge", "--sample")
    evaluation = subprocess.run(
        [sys.executable, "manage.py", "eval_knowledge", "chat/knowledge/sample/eval.jsonl"],
        cwd=ROOT,
        env=bench.env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    tqdm.write("  timing searches on 10,000 synthetic passages")
    return {"eval": evaluation, "retrieval": bench_retrieval()}


def lines(data: dict) -> list[str]:
    r = data["retrieval"]
    return [
        *(f"  {line}" for line in data["eval"].splitlines()),
        f"  {r['passages']} passages: index built in {r['build_s']} s; search p50 "
        f"{r['p50_ms']} ms, p99 {r['p99_ms']} ms ({r['queries_with_hits']:.0%} with a hit)",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.knowledge", description=__doc__)
    parser.add_argument("--passages", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=1000)
    args = parser.parse_args()
    result = bench_retrieval(passages=args.passages, queries=args.queries)
    print(
        f"{result['passages']} passages: index built in {result['build_s']} s; search "
        f"p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, mean {result['mean_ms']} ms "
        f"({result['queries_with_hits']:.0%} of questions with a hit)"
    )


if __name__ == "__main__":
    main()
