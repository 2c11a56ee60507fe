"""Name and place-name material for the synthetic ledger (Chinese, plausible, fictitious).

Surnames are weighted roughly by their frequency in China's 2020 census household registration
statistics (top surnames first); given names are drawn from common single characters. Place names
are built from two syllables plus a suffix (县/镇/村), like the sample exports.
"""

from __future__ import annotations

import numpy as np

SURNAMES = list(
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林高罗郑梁谢宋唐许韩邓冯曹彭曾肖田董潘袁蔡蒋余于杜叶程"
    "魏苏吕丁任卢姚沈钟姜崔谭陆范汪廖石金韦贾夏付方邹熊白孟秦邱侯江尹薛闫段雷龙黎史陶贺毛郝顾龚"
    "邵万覃武钱戴严欧莫孔向常汤"
)
# Zipf-like weights: the top surnames carry most of the population.
SURNAME_WEIGHTS = 1.0 / (np.arange(len(SURNAMES)) + 4.0)
SURNAME_WEIGHTS = SURNAME_WEIGHTS / SURNAME_WEIGHTS.sum()

GIVEN_MALE = list("伟刚勇军强磊洋杰涛明超辉华平建国峰斌波鹏海林东成志文生龙飞俊浩宇博")
GIVEN_FEMALE = list("芳娟敏静丽艳霞燕玲红梅琴英秀兰萍娜婷雪慧巧云凤桂珍玉莉倩颖欣怡")
GIVEN_ANY = list("春永德荣新安宁晓小金德光")

PLACE_SYLLABLES = list("青白云岭兴福和安寿泰康平溪沟桥坝湾山河石龙凤丰乐清水石田松竹杨柳")

ETHNIC_GROUPS = ("汉族", "苗族", "土家族", "彝族", "侗族", "回族")


def place_names(rng: np.random.Generator, n: int, suffix: str, avoid: set[str] | None = None) -> list[str]:
    """n distinct two-syllable names with a suffix (e.g. 青石县, 兴兴镇, 康沟村)."""
    out: list[str] = []
    seen = set(avoid or ())
    while len(out) < n:
        a, b = rng.choice(len(PLACE_SYLLABLES), size=2)
        name = PLACE_SYLLABLES[a] + PLACE_SYLLABLES[b] + suffix
        if name not in seen:
            seen.add(name)
            out.append(name)
    return out


def person_names(rng: np.random.Generator, surname_idx: np.ndarray, female: np.ndarray) -> np.ndarray:
    """Vectorised full names: surname + one or two given-name characters by sex."""
    n = len(surname_idx)
    sur = np.array(SURNAMES)[surname_idx]
    gm, gf, ga = np.array(GIVEN_MALE), np.array(GIVEN_FEMALE), np.array(GIVEN_ANY)
    first = np.where(female, gf[rng.integers(0, len(gf), n)], gm[rng.integers(0, len(gm), n)])
    second_pool = np.where(female, gf[rng.integers(0, len(gf), n)], gm[rng.integers(0, len(gm), n)])
    second = np.where(rng.random(n) < 0.25, ga[rng.integers(0, len(ga), n)], second_pool)
    two = rng.random(n) < 0.55
    return np.char.add(np.char.add(sur, first), np.where(two, second, ""))
