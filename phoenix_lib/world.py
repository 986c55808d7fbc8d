"""A synthetic Phoenix world with a known truth: users, authors, posts and engagement.

The release ships no data, so the book makes a world whose engagement
probabilities are known exactly. Models trained on it can then be scored
against the *oracle*, the metric the true probabilities themselves achieve.

* Users have a sparse mix of interests over ``num_topics`` topics and an
  activity level; authors have a topic mix and a popularity; posts have an
  author, a topic mix (mostly their author's), a quality, a creation hour and
  a video flag. Raw IDs are 64-bit snowflake-like values (creation time in the
  high bits), never small dense indices.
* Truth: for a (user, post, surface), each of the 19 actions has probability
  ``sigmoid(base + slope * affinity + ...)``, with positive slopes for positive
  actions and negative slopes for ``not_interested``, ``block_author``,
  ``mute_author`` and ``report``. Affinity is ``log(num_topics * interest . topics)``
  plus post quality, author popularity and a per-pair noise term that is a
  deterministic function of the pair. ``vqv`` needs a video and
  ``photo_expand`` a non-video post. ``dwell_time`` is a probability-like score
  whose label is a Bernoulli draw of it.
* Sessions: impressions come from a candidate source (popular posts and posts
  on the user's topics, optionally favouring recent ones), engagements are
  drawn from the truth, and a history is the last ``S`` impressions the user
  acted on.
* Memory (:meth:`World.timeline`): every user lives through a sequence of sessions in
  order, and what they did changes what they will do. Four mechanisms, each with a
  knob in :class:`WorldConfig` that switches it off at 0:

  - *momentum* and *drift*: the interest that drives engagement mixes the user's
    long-term interest with the topics of what they recently engaged with (posts
    that held their attention count: dwell is an engagement), and the long-term
    interest itself drifts (a passing interest, replaced now and then);
  - *author affinity*: authors the user recently engaged with get an affinity bonus;
  - *persistent negative feedback*: after ``block_author`` or ``mute_author`` the user
    never engages positively with that author again, and ``not_interested`` lowers the
    affinity of that post's topics for the next few sessions;
  - *freshness*: a post's affinity is higher while it is young.

  A model that reads the history can learn the first three (the history holds the
  recent posts, their authors and the actions taken); one that sees only the user
  and the candidate cannot. :meth:`World.session` draws sessions without memory,
  each user at their long-term interest.

Everything is NumPy, vectorised, and deterministic given the seeds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from phoenix_lib.config import ACTIONS, NEGATIVE_FEEDBACK
from phoenix_lib.inputs import Buckets, RecsysBatch, batch_from_ids, hash_entities
from phoenix_lib.mpzch_reference import murmur_hash3_2x64_numpy

# Probability of each action at affinity 0 (a typical pair) and its slope in
# affinity. Rates follow the usual shape of a feed: dwell common, likes a few
# percent, shares and reports rare.
BASE_RATES = {
    "favorite": 0.02, "reply": 0.004, "repost": 0.008, "photo_expand": 0.03,
    "click": 0.03, "profile_click": 0.006, "vqv": 0.2, "share": 0.003,
    "share_via_dm": 0.002, "share_via_copy_link": 0.001, "dwell": 0.1, "quote": 0.002,
    "quoted_click": 0.004, "follow_author": 0.002, "not_interested": 0.01,
    "block_author": 0.0006, "mute_author": 0.001, "report": 0.0004, "dwell_time": 0.3,
}  # fmt: skip
SLOPES = {a: (-0.8 if a in NEGATIVE_FEEDBACK else 1.0) for a in ACTIONS} | {
    "dwell": 0.6, "dwell_time": 0.5, "vqv": 0.6, "click": 0.8, "follow_author": 1.3,
}  # fmt: skip
_EPOCH_MS = 1_288_834_974_657  # Twitter's snowflake epoch (Nov 2010), for realistic IDs
_START_MS = 1_767_225_600_000 - _EPOCH_MS  # the world starts on 2026-01-01


@dataclasses.dataclass(frozen=True)
class WorldConfig:
    """The knobs of the world. Defaults give a small world that builds in a second.

    Attributes:
      num_users, num_authors, num_posts: population sizes.
      num_topics: dimension of the interest space.
      interest_concentration: Dirichlet concentration of user interests (smaller
        = more focused users, stronger personalisation signal).
      topic_concentration: Dirichlet concentration of post and author topics.
      author_topic_share: how much of a post's topic mix comes from its author.
      popularity_sigma: log-normal spread of author popularity and user activity.
      quality_sigma: spread of post quality (shifts every action's logit).
      noise: scale of the per-(user, post) noise in affinity: what no model can learn.
      video_share: fraction of video posts.
      hours: posts are created uniformly over ``[0, hours)``.
      num_surfaces: product surfaces used (must fit the model's vocabulary).
      momentum: share of the user's current interest that comes from what they
        recently engaged with (0: interests have no memory).
      momentum_decay: per session, how much of the recent-interest average is kept
        when the user engages with something new (0.5: the last two or three sessions
        with engagement dominate).
      drift: weight of a passing interest in the user's long-term interest: a second
        Dirichlet draw that the user replaces by a new one with probability
        ``drift_rate`` per session (0: long-term interests are fixed). The mix keeps
        interests as focused at the end of a timeline as at its start.
      drift_rate: per session, the probability that a user's passing interest changes.
      author_affinity: affinity bonus for a post whose author is among the last
        ``author_memory`` authors the user engaged with (0: no author memory).
      author_memory: how many recently engaged authors the user remembers.
      negative_memory: whether ``block_author`` and ``mute_author`` are forever (the
        user never engages positively with that author again).
      not_interested_penalty: affinity lost per unit of overlap between a post's topics
        and the topics the user recently said ``not_interested`` to (0: no effect).
      not_interested_decay: per session, how much of that topic penalty is kept (0.8:
        it fades over about five sessions, while the action is still in the history).
      freshness: affinity bonus of a brand-new post, decaying as
        ``exp(-age / freshness_hours)`` (0: age does not matter).
      freshness_hours: the time scale of that decay.
      seed: the world's seed.
    """

    num_users: int = 20_000
    num_authors: int = 2_000
    num_posts: int = 100_000
    num_topics: int = 24
    interest_concentration: float = 0.1
    topic_concentration: float = 0.1
    author_topic_share: float = 0.6
    popularity_sigma: float = 1.0
    quality_sigma: float = 0.3
    noise: float = 0.5
    video_share: float = 0.3
    hours: int = 72
    num_surfaces: int = 4
    momentum: float = 0.8
    momentum_decay: float = 0.5
    drift: float = 0.4
    drift_rate: float = 0.05
    author_affinity: float = 2.0
    author_memory: int = 8
    negative_memory: bool = True
    not_interested_penalty: float = 2.0
    not_interested_decay: float = 0.8
    freshness: float = 0.5
    freshness_hours: float = 12.0
    seed: int = 0

    def __post_init__(self):
        for name in (
            "num_users",
            "num_authors",
            "num_posts",
            "num_topics",
            "hours",
            "num_surfaces",
            "author_memory",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("interest_concentration", "topic_concentration"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("author_affinity", "not_interested_penalty", "freshness"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be non-negative, got {getattr(self, name)}")
        if self.freshness_hours <= 0:
            raise ValueError(f"freshness_hours must be positive, got {self.freshness_hours}")
        for name in (
            "author_topic_share",
            "video_share",
            "momentum",
            "momentum_decay",
            "drift",
            "not_interested_decay",
        ):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")


def snowflake_ids(rng: np.random.Generator, times_ms: np.ndarray) -> np.ndarray:
    """64-bit snowflake-like IDs: milliseconds since the epoch << 22 | 22 random bits.

    ``times_ms`` are made strictly increasing in sorted order first, so the IDs are
    unique.
    """
    order = np.argsort(times_ms, kind="stable")
    ms = np.empty_like(times_ms)
    ms[order] = np.maximum.accumulate(times_ms[order] + np.arange(times_ms.size))
    return (ms.astype(np.int64) << 22) | rng.integers(0, 2**22, times_ms.size)


class World:
    """Users, authors and posts with their latent features, and the true engagement model.

    Attributes (NumPy): ``user_ids`` [U], ``user_interest`` [U, K], ``user_activity`` [U];
    ``author_ids`` [Na], ``author_topics`` [Na, K], ``author_popularity`` [Na];
    ``post_ids`` [P], ``post_author`` [P] (index), ``post_topics`` [P, K],
    ``post_quality`` [P], ``post_hour`` [P] (creation), ``post_video`` [P] bool.
    """

    def __init__(self, config: WorldConfig = WorldConfig()):
        self.config = c = config
        rng = np.random.default_rng(c.seed)
        k = c.num_topics
        self.user_interest = rng.dirichlet(np.full(k, c.interest_concentration), c.num_users)
        self.user_activity = rng.lognormal(0.0, c.popularity_sigma, c.num_users)
        self.author_topics = rng.dirichlet(np.full(k, c.topic_concentration), c.num_authors)
        self.author_popularity = rng.normal(0.0, c.popularity_sigma, c.num_authors)
        author_weight = np.exp(self.author_popularity)
        self.post_author = rng.choice(
            c.num_authors, c.num_posts, p=author_weight / author_weight.sum()
        )
        own = rng.dirichlet(np.full(k, c.topic_concentration), c.num_posts)
        share = c.author_topic_share
        self.post_topics = share * self.author_topics[self.post_author] + (1 - share) * own
        self.post_quality = rng.normal(0.0, c.quality_sigma, c.num_posts)
        self.post_hour = rng.integers(0, c.hours, c.num_posts)
        self.post_video = rng.random(c.num_posts) < c.video_share
        hour_ms = 3_600_000
        post_ms = _START_MS + self.post_hour * hour_ms + rng.integers(0, hour_ms, c.num_posts)
        self.post_ids = snowflake_ids(rng, post_ms)
        self.user_ids = snowflake_ids(rng, rng.integers(0, _START_MS, c.num_users))
        self.author_ids = snowflake_ids(rng, rng.integers(0, _START_MS, c.num_authors))
        # Candidate sources: popularity (quality and author) and topic lists.
        self.post_popularity = np.exp(self.post_quality + self.author_popularity[self.post_author])
        self._topic_order = np.argsort(self.post_topics.argmax(1), kind="stable")
        self._topic_start = np.searchsorted(
            self.post_topics.argmax(1)[self._topic_order], np.arange(k + 1)
        )
        self._base_logit = np.log(np.array([BASE_RATES[a] for a in ACTIONS]))
        self._base_logit -= np.log1p(-np.array([BASE_RATES[a] for a in ACTIONS]))
        self._slope = np.array([SLOPES[a] for a in ACTIONS])
        self._surface_bias = rng.normal(0.0, 0.2, (c.num_surfaces, len(ACTIONS)))

    def post_content(self, dim: int = 32, *, author_weight: float = 0.5, noise: float = 0.5,
                     seed: int = 0) -> np.ndarray:  # fmt: skip
        """A content vector per post, ``[P, dim]``, as a multimodal encoder might give one.

        The post's topic mixture and its author, each through a fixed random projection
        to ``dim`` (a topic direction of unit norm, an author direction of norm
        ``author_weight``), plus Gaussian noise of norm about ``noise``. Posts on the same
        topics by the same author therefore lie close; the noise stands for everything
        an encoder sees that the world's truth does not use. Seeded by ``seed`` alone.
        """
        if dim < 1 or author_weight < 0 or noise < 0:
            raise ValueError("dim must be positive, author_weight and noise non-negative")
        rng = np.random.default_rng(seed)
        topic = self.post_topics @ rng.normal(size=(self.config.num_topics, dim))
        topic /= np.linalg.norm(topic, axis=1, keepdims=True)
        author = rng.normal(size=(self.config.num_authors, dim))
        author *= author_weight / np.linalg.norm(author, axis=1, keepdims=True)
        jitter = rng.normal(size=(self.config.num_posts, dim)) * noise / np.sqrt(dim)
        return (topic + author[self.post_author] + jitter).astype(np.float32)

    # ------------------------------------------------------------------ truth

    def affinity(
        self, users: np.ndarray, posts: np.ndarray, *, noise: bool = True, state=None, hour=None
    ) -> np.ndarray:
        """Affinity of ``users`` [...] with ``posts`` [...] (broadcast), float64 [...].

        ``noise=False`` leaves out the per-pair noise: the part of the truth that
        user and post features determine, which a model can learn. ``state`` (a
        :class:`UserState` whose arrays broadcast as ``[..., K]``, ``[..., R]``) adds what
        the users' pasts left: their current interest in place of the long-term one,
        the author bonus and the ``not_interested`` penalty. ``hour`` (the time of the
        impression) adds the freshness bonus.
        """
        c = self.config
        interest = self.user_interest[users] if state is None else state.interest
        topics = self.post_topics[posts]
        match = np.einsum("...k,...k->...", interest, topics)
        author = self.author_popularity[self.post_author[posts]]
        learnable = np.log(c.num_topics * match + 0.05) + self.post_quality[posts] + 0.3 * author
        if state is not None:
            known = (state.authors == self.post_author[posts][..., None]).any(-1)
            learnable = learnable + c.author_affinity * known
            learnable = learnable - c.not_interested_penalty * (state.penalty * topics).sum(-1)
        if hour is not None:
            age = np.maximum(hour - self.post_hour[posts], 0)
            learnable = learnable + c.freshness * np.exp(-age / c.freshness_hours)
        if not noise:
            return learnable
        users, posts = np.broadcast_arrays(users, posts)
        pair = users.astype(np.uint64) * np.uint64(c.num_posts) + posts.astype(np.uint64)
        return learnable + c.noise * _gaussian_from_bits(murmur_hash3_2x64_numpy(pair, c.seed + 1))

    def probabilities(self, users, posts, surfaces, *, state=None, hour=None) -> np.ndarray:
        """True probability of every action, ``[..., 19]`` in ``ACTIONS`` order.

        Args:
          users, posts: integer indices (not raw IDs), broadcastable shapes ``[...]``.
          surfaces: product surface per pair, in ``[0, num_surfaces)``.
          state, hour: the users' memory (a :class:`UserState`, ``[..., K]`` per array with
            ``[...]`` broadcasting to the pairs) and the time, as in :meth:`affinity`. With a
            state, a user never engages positively with an author they blocked or
            muted (``negative_memory``).
        """
        users, posts, surfaces = np.asarray(users), np.asarray(posts), np.asarray(surfaces)
        leading = [] if state is None else [np.shape(x)[:-1] for x in state]
        shape = np.broadcast_shapes(users.shape, posts.shape, surfaces.shape, *leading)
        users, posts, surfaces = (np.broadcast_to(x, shape) for x in (users, posts, surfaces))
        if state is not None:  # each array [..., K] or [..., R], its [...] broadcast to the pairs'
            state = UserState(*(np.broadcast_to(x, shape + np.shape(x)[-1:]) for x in state))
        a = self.affinity(users, posts, state=state, hour=hour)[..., None]
        logits = self._base_logit + self._slope * a + self._surface_bias[surfaces]
        p = 1.0 / (1.0 + np.exp(-logits))
        video = self.post_video[posts]
        p[..., ACTIONS.index("vqv")] *= video
        p[..., ACTIONS.index("photo_expand")] *= ~video
        if state is not None and self.config.negative_memory:
            blocked = (state.blocked == self.post_author[posts][..., None]).any(-1)
            p[..., _POSITIVE_COLUMNS] *= ~blocked[..., None]
        return p

    # ------------------------------------------------------------------ sessions

    def sample_users(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` user indices, drawn in proportion to activity."""
        w = self.user_activity
        return rng.choice(self.config.num_users, n, p=w / w.sum())

    def impressions(
        self,
        rng: np.random.Generator,
        users: np.ndarray,
        count: int,
        *,
        now_hour: int | None = None,
        recency_hours: float | None = None,
        topic_share: float = 0.5,
        interest: np.ndarray | None = None,
    ) -> np.ndarray:
        """Post indices a candidate source shows each user: int ``[len(users), count]``.

        A ``topic_share`` of impressions comes from the user's topics (a topic drawn
        from the user's interests, then a post on it), the rest from popular posts.
        With ``now_hour``, only posts created by then are shown; with
        ``recency_hours``, popularity is damped by ``exp(-age / recency_hours)``.
        ``interest`` [len(users), K] replaces the users' long-term interests (a
        timeline's drifted ones).
        """
        c = self.config
        b = users.shape[0]
        if recency_hours is not None and now_hour is None:
            raise ValueError("recency_hours needs now_hour")
        weight = self.post_popularity.copy()
        if now_hour is not None:
            age = now_hour - self.post_hour
            weight = np.where(age >= 0, weight, 0.0)
            if recency_hours is not None:
                weight = weight * np.exp(-np.clip(age, 0, None) / recency_hours)
        if weight.sum() == 0:
            raise ValueError(f"no post exists at now_hour={now_hour}")
        cdf = np.cumsum(weight)
        popular = np.searchsorted(cdf, rng.random((b, count)) * cdf[-1], side="right")
        # Topic source: a topic from the user's interests, then a post of that topic:
        # uniform among the topic's posts, or with recency_hours in proportion to
        # exp(-age / recency_hours) among those that exist (falling back to the
        # popular draw when the topic has none).
        icdf = np.cumsum(self.user_interest[users] if interest is None else interest, axis=1)
        topics = (rng.random((b, count, 1)) * icdf[:, None, -1:] > icdf[:, None, :]).sum(-1)
        topics = np.minimum(topics, c.num_topics - 1)
        start, stop = self._topic_start[topics], self._topic_start[topics + 1]
        u = rng.random((b, count))
        if recency_hours is None:
            pick = start + (u * (stop - start)).astype(np.int64)
            has_posts = stop > start
        else:
            fresh = np.exp(-np.clip(age, 0, None) / recency_hours) * (age >= 0)
            cw = np.cumsum(fresh[self._topic_order])
            low = np.where(start > 0, cw[np.maximum(start - 1, 0)], 0.0)
            high = np.where(stop > 0, cw[np.maximum(stop - 1, 0)], 0.0)
            pick = np.searchsorted(cw, low + u * (high - low), side="right")
            has_posts = high > low
        on_topic = self._topic_order[np.minimum(pick, c.num_posts - 1)]
        ok = has_posts & (rng.random((b, count)) < topic_share)
        if now_hour is not None:
            ok &= self.post_hour[on_topic] <= now_hour
        return np.where(ok, on_topic, np.minimum(popular, c.num_posts - 1))

    def engage(self, rng: np.random.Generator, probabilities: np.ndarray) -> np.ndarray:
        """Draw every action from its probability: float32 0/1 ``[..., 19]``."""
        return (rng.random(probabilities.shape) < probabilities).astype(np.float32)

    def session(
        self,
        seed: int,
        *,
        batch_size: int,
        history_len: int,
        num_candidates: int,
        now_hour: int | None = None,
        recency_hours: float | None = None,
        users: np.ndarray | None = None,
    ) -> Session:
        """One batch of users, each with a history and ranking candidates (all index-level).

        The history is the last ``history_len`` of ``3 * history_len`` past
        impressions on which the user took any action (padded when fewer); the
        candidates are ``num_candidates`` fresh impressions with true
        probabilities and drawn labels.
        """
        rng = np.random.default_rng([self.config.seed, seed])
        c = self.config
        if users is None:
            users = self.sample_users(rng, batch_size)
        s = history_len
        if s < 1 or num_candidates < 1:
            raise ValueError(
                f"history_len and num_candidates must be positive, got {s}, {num_candidates}"
            )
        kw = dict(now_hour=now_hour, recency_hours=recency_hours)
        past = self.impressions(rng, users, 3 * s, **kw)
        past_surface = rng.integers(0, c.num_surfaces, past.shape)
        past_actions = self.engage(rng, self.probabilities(users[:, None], past, past_surface))
        acted = _acted(past_actions)
        # Keep the last S acted-on impressions, oldest first, padding at the end.
        rank = np.cumsum(acted[:, ::-1], axis=1)[:, ::-1]  # 1 = the most recent
        keep = acted & (rank <= s)
        order = np.argsort(~keep, axis=1, kind="stable")[:, :s]
        mask = np.take_along_axis(keep, order, 1)
        history = np.take_along_axis(past, order, 1)
        candidates = self.impressions(rng, users, num_candidates, **kw)
        surface = rng.integers(0, c.num_surfaces, candidates.shape)
        probs = self.probabilities(users[:, None], candidates, surface)
        return Session(
            users=users,
            history_posts=np.where(mask, history, 0),
            history_actions=np.take_along_axis(past_actions, order[..., None], 1) * mask[..., None],
            history_surface=np.where(mask, np.take_along_axis(past_surface, order, 1), 0),
            history_mask=mask,
            candidate_posts=candidates,
            candidate_surface=surface,
            probabilities=probs.astype(np.float32),
            labels=self.engage(rng, probs),
        )

    # ------------------------------------------------------------------ timelines

    def timeline(
        self,
        seed: int,
        *,
        num_sessions: int,
        session_size: int,
        start_hour: int = 0,
        hours_per_session: int = 1,
        recency_hours: float | None = None,
        topic_share: float = 0.5,
        progress: bool = False,
    ) -> Timeline:
        """Every user's sessions, in order, each one changing what the user does next.

        Session ``t`` happens at hour ``start_hour + t * hours_per_session``: the
        candidate source (:meth:`impressions` at the user's drifted long-term interest)
        shows ``session_size`` posts that exist by then, the truth is evaluated under
        the user's :class:`UserState` at that moment, the actions are drawn, and the
        state is updated from them (the mechanisms in the module's docstring).

        Returns:
          A :class:`Timeline` for all ``num_users`` users (``U`` users, ``T`` sessions,
          ``C`` impressions each).
        """
        c = self.config
        if num_sessions < 1 or session_size < 1:
            raise ValueError(
                f"num_sessions and session_size must be positive, got {num_sessions}, "
                f"{session_size}"
            )
        if hours_per_session < 0 or start_hour < 0:
            raise ValueError("start_hour and hours_per_session must be non-negative")
        rng = np.random.default_rng([c.seed, seed, 1])
        users = np.arange(c.num_users)
        alpha = np.full(c.num_topics, c.interest_concentration)
        passing = rng.dirichlet(alpha, c.num_users)
        long_term = (1 - c.drift) * self.user_interest + c.drift * passing
        recent = long_term.copy()
        state = UserState(
            interest=long_term,
            authors=np.full((c.num_users, c.author_memory), -1),
            blocked=np.full((c.num_users, 0), -1),
            penalty=np.zeros((c.num_users, c.num_topics)),
        )
        hours = start_hour + hours_per_session * np.arange(num_sessions)
        shape = (c.num_users, num_sessions, session_size)
        posts = np.zeros(shape, np.int64)
        surface = np.zeros(shape, np.int64)
        probabilities = np.zeros((*shape, len(ACTIONS)), np.float32)
        labels = np.zeros((*shape, len(ACTIONS)), np.uint8)
        states = []
        block = [ACTIONS.index("block_author"), ACTIONS.index("mute_author")]
        for t in tqdm(range(num_sessions), desc="timeline", disable=not progress, ascii=True):
            interest = (1 - c.momentum) * long_term + c.momentum * recent
            state = state._replace(interest=interest)
            states.append(state)
            shown = self.impressions(
                rng, users, session_size, now_hour=int(hours[t]), recency_hours=recency_hours,
                topic_share=topic_share, interest=long_term,
            )  # fmt: skip
            surfaces = rng.integers(0, c.num_surfaces, shown.shape)
            p = self.probabilities(
                users[:, None], shown, surfaces,
                state=UserState(*(x[:, None] for x in state)), hour=hours[t],
            )  # fmt: skip
            drawn = self.engage(rng, p)
            posts[:, t], surface[:, t], probabilities[:, t], labels[:, t] = (
                shown,
                surfaces,
                p,
                drawn,
            )
            # What this session leaves behind.
            topics = self.post_topics[shown]  # [U, C, K]
            engaged = drawn[..., _POSITIVE_COLUMNS].any(-1)  # [U, C]
            count = engaged.sum(1, keepdims=True)
            seen = (engaged[..., None] * topics).sum(1) / np.maximum(count, 1)
            decay = c.momentum_decay
            recent = np.where(count > 0, decay * recent + (1 - decay) * seen, recent)
            authors = self.post_author[shown]
            said_no = drawn[..., ACTIONS.index("not_interested")][..., None]
            state = state._replace(
                authors=_push(state.authors, authors, engaged, keep=c.author_memory),
                blocked=_push(state.blocked, authors, drawn[..., block].any(-1)),
                penalty=np.minimum(
                    c.not_interested_decay * state.penalty + (said_no * topics).sum(1), 1.0
                ),
            )
            change = rng.random(c.num_users) < c.drift_rate
            passing = np.where(change[:, None], rng.dirichlet(alpha, c.num_users), passing)
            long_term = (1 - c.drift) * self.user_interest + c.drift * passing
        width = max(x.blocked.shape[1] for x in states)
        states = [x._replace(blocked=_pad(x.blocked, width)) for x in states]
        acted = _acted(labels).reshape(c.num_users, -1)  # for the histories
        total = np.concatenate([np.zeros((c.num_users, 1), np.int64), np.cumsum(acted, 1)], 1)
        return Timeline(
            hours=hours,
            posts=posts,
            surface=surface,
            probabilities=probabilities,
            labels=labels,
            state=UserState(*(np.stack(x, axis=1) for x in zip(*states, strict=True))),
            acted_order=np.argsort(~acted, axis=1, kind="stable"),
            acted_before=total[:, : num_sessions * session_size : session_size],
        )

    def timeline_session(
        self, timeline: Timeline, users: np.ndarray, sessions: np.ndarray, history_len: int
    ) -> Session:
        """Session ``sessions[b]`` of user ``users[b]`` as a :class:`Session`: its candidates
        are that session's impressions, its history the user's last ``history_len``
        impressions with an action in earlier sessions, oldest first (padded at the end).
        """
        users, sessions = np.asarray(users), np.asarray(sessions)
        if users.shape != sessions.shape or users.ndim != 1:
            raise ValueError(
                f"users and sessions must be [B] each, got {users.shape}, {sessions.shape}"
            )
        num_users, num_sessions, size = timeline.posts.shape
        if history_len < 1:
            raise ValueError(f"history_len must be positive, got {history_len}")
        if users.min(initial=0) < 0 or users.max(initial=0) >= num_users:
            raise ValueError(f"users must be in [0, {num_users})")
        if sessions.min(initial=0) < 0 or sessions.max(initial=0) >= num_sessions:
            raise ValueError(f"sessions must be in [0, {num_sessions})")
        n = timeline.acted_before[users, sessions]  # acted-on impressions before the session
        slot = np.arange(history_len)
        mask = slot < np.minimum(n, history_len)[:, None]
        flat = timeline.acted_order[
            users[:, None], np.maximum(n - history_len, 0)[:, None] + slot * mask
        ]
        t, c = np.divmod(flat, size)
        u = users[:, None]
        history_actions = timeline.labels[u, t, c].astype(np.float32) * mask[..., None]
        return Session(
            users=users,
            history_posts=np.where(mask, timeline.posts[u, t, c], 0),
            history_actions=history_actions,
            history_surface=np.where(mask, timeline.surface[u, t, c], 0),
            history_mask=mask,
            candidate_posts=timeline.posts[users, sessions],
            candidate_surface=timeline.surface[users, sessions],
            probabilities=timeline.probabilities[users, sessions],
            labels=timeline.labels[users, sessions].astype(np.float32),
        )

    def history_free_probabilities(
        self, timeline: Timeline, users: np.ndarray, sessions: np.ndarray
    ) -> np.ndarray:
        """The best prediction that ignores the history, estimated: for each user's
        session and candidate, the truth averaged over the states the user is in across
        their whole timeline (at the session's own hour). ``[B, C, 19]`` float32.
        """
        out = []
        for start in range(0, len(users), 256):
            u, t = users[start : start + 256], sessions[start : start + 256]
            p = self.probabilities(
                u[:, None, None], timeline.posts[u, t][:, None], timeline.surface[u, t][:, None],
                state=UserState(*(x[u][:, :, None] for x in timeline.state)),  # [b, T, 1, K]
                hour=timeline.hours[t][:, None, None],
            )  # fmt: skip
            out.append(p.mean(1))
        return np.concatenate(out).astype(np.float32)

    def timeline_data(
        self,
        config,
        timeline: Timeline,
        num_buckets,
        *,
        batch_size: int,
        sessions: range,
        seed_offset: int = 0,
        transform: Callable[[Session], Session] | None = None,
        candidates: Callable | None = None,
        on_session: Callable[[int, Session], None] | None = None,
    ):
        """``data(i) -> (batch, labels, mask)`` for :func:`phoenix_lib.train.fit` from a
        timeline: step ``i`` takes ``batch_size`` (user, session) pairs drawn uniformly
        (seeded by ``seed_offset + i``) with sessions in ``sessions``.

        ``candidates(session, sessions [B], rng) -> posts [B, C]``, if given, replaces the
        logged impressions by other posts (those a retriever finds, say), labelled from
        the truth at that moment (:meth:`shown`). ``transform``, if given, changes each
        :class:`Session` before it is hashed (the ablations); ``on_session(i, session)``,
        if given, sees every session made (after ``transform``)."""
        _check_sessions(timeline, sessions)
        buckets = self.buckets(config, num_buckets)

        def data(i: int):
            rng, users, drawn = self._draw(timeline, sessions, batch_size, seed_offset + i)
            s = self.timeline_session(timeline, users, drawn, config.history_seq_len)
            if candidates is not None:
                s = self.shown(timeline, s, drawn, candidates(s, drawn, rng), rng)
            if transform is not None:
                s = transform(s)
            if on_session is not None:
                on_session(i, s)
            return (
                self.to_batch(config, s, num_buckets, buckets=buckets),
                s.labels,
                np.ones(s.labels.shape[:2], bool),
            )

        return data

    def timeline_retrieval_data(
        self,
        config,
        timeline: Timeline,
        num_buckets,
        log_q: np.ndarray,
        *,
        batch_size: int,
        sessions: range,
        seed_offset: int = 0,
    ):
        """``data(i) -> (batch, log_q [B], item [B], valid [B])`` for two-tower training from
        a timeline, drawn as in :meth:`timeline_data`: each pair's one candidate is the
        first impression of its session with a positive engagement (:func:`first_positive`;
        ``valid`` is False where there is none). ``log_q`` [P]: each post's log
        probability of being such a positive (:func:`positive_log_q`)."""
        _check_sessions(timeline, sessions)
        buckets = self.buckets(config, num_buckets)

        def data(i: int):
            _, users, drawn = self._draw(timeline, sessions, batch_size, seed_offset + i)
            s = self.timeline_session(timeline, users, drawn, config.history_seq_len)
            item, valid = first_positive(s)
            one = s._replace(
                candidate_posts=item[:, None], candidate_surface=s.candidate_surface[:, :1]
            )
            batch = self.to_batch(config, one, num_buckets, buckets=buckets)
            return batch, log_q[item], item, valid

        return data

    def _draw(self, timeline: Timeline, sessions: range, batch_size: int, seed: int):
        """``(rng, users [B], sessions [B])``: (user, session) pairs drawn uniformly."""
        rng = np.random.default_rng([self.config.seed, seed, 2])
        users = rng.integers(0, timeline.posts.shape[0], batch_size)
        return rng, users, rng.choice(sessions, batch_size)

    def shown(
        self,
        timeline: Timeline,
        session: Session,
        sessions: np.ndarray,
        posts: np.ndarray,
        rng: np.random.Generator,
    ) -> Session:
        """``session`` (user ``b`` at session ``sessions[b]`` of ``timeline``) with ``posts``
        [B, C] shown in place of its impressions: on random surfaces, at the session's
        hour, their truth evaluated under each user's state at that moment and the
        labels drawn from it. Every post must exist by then."""
        posts, sessions = np.asarray(posts), np.asarray(sessions)
        b = session.users.shape[0]
        if posts.ndim != 2 or posts.shape[0] != b or sessions.shape != (b,):
            raise ValueError(
                f"posts must be [B, C] and sessions [B] for B = {b}, got {posts.shape}, "
                f"{sessions.shape}"
            )
        if posts.min(initial=0) < 0 or posts.max(initial=0) >= self.config.num_posts:
            raise ValueError(f"posts must be indices in [0, {self.config.num_posts})")
        hours = timeline.hours[sessions][:, None]
        if (self.post_hour[posts] > hours).any():
            raise ValueError("a post cannot be shown before its creation hour")
        surface = rng.integers(0, self.config.num_surfaces, posts.shape)
        state = UserState(*(x[session.users, sessions][:, None] for x in timeline.state))
        p = self.probabilities(session.users[:, None], posts, surface, state=state, hour=hours)
        return session._replace(
            candidate_posts=posts,
            candidate_surface=surface,
            probabilities=p.astype(np.float32),
            labels=self.engage(rng, p),
        )

    def buckets(self, config, num_buckets: tuple[int, int, int]) -> Buckets:
        """Every user's, post's and author's hash buckets, hashed once (:class:`Buckets`).

        :meth:`to_batch` given them gathers rows instead of hashing each batch's raw IDs
        again: the same batch, without the hashing on every training step.
        """
        return hash_entities(config, num_buckets, self.user_ids, self.post_ids, self.author_ids)

    def to_batch(
        self,
        config,
        session: Session,
        num_buckets: tuple[int, int, int],
        *,
        buckets: Buckets | None = None,
    ) -> RecsysBatch:
        """Hash a session's raw IDs into a :class:`RecsysBatch` for a model ``config``;
        with ``buckets`` (from :meth:`buckets`, for the same ``num_buckets``), gather them."""
        hp, cp = session.history_posts, session.candidate_posts
        if buckets is not None:
            if buckets.num_buckets != tuple(num_buckets):
                raise ValueError(
                    f"buckets were hashed for {buckets.num_buckets}, not {tuple(num_buckets)}"
                )
            mask = session.history_mask[..., None]
            author = self.post_author
            return RecsysBatch(
                user_hashes=buckets.user[session.users],
                history_post_hashes=np.where(mask, buckets.post[hp], 0),
                history_author_hashes=np.where(mask, buckets.author[author[hp]], 0),
                history_actions=np.asarray(session.history_actions, np.float32) * mask,
                history_product_surface=np.asarray(session.history_surface, np.int32),
                candidate_post_hashes=buckets.post[cp],
                candidate_author_hashes=buckets.author[author[cp]],
                candidate_product_surface=np.asarray(session.candidate_surface, np.int32),
            )
        return batch_from_ids(
            config,
            user_ids=self.user_ids[session.users],
            history_post_ids=self.post_ids[hp],
            history_author_ids=self.author_ids[self.post_author[hp]],
            history_actions=session.history_actions,
            history_product_surface=session.history_surface,
            history_mask=session.history_mask,
            candidate_post_ids=self.post_ids[cp],
            candidate_author_ids=self.author_ids[self.post_author[cp]],
            candidate_product_surface=session.candidate_surface,
            candidate_mask=np.ones(cp.shape, bool),
            num_buckets=num_buckets,
        )

    def ranking_data(
        self,
        config,
        num_buckets,
        *,
        batch_size: int,
        seed_offset: int = 0,
        on_session: Callable[[int, Session], None] | None = None,
        **kw,
    ):
        """``data(i) -> (batch, labels, mask)`` for :func:`phoenix_lib.train.fit`: step ``i``'s
        session has seed ``seed_offset + i``, so the stream is the same on every run.
        ``on_session(i, session)``, if given, sees every session made (to gather statistics
        of the training stream without making its sessions twice)."""

        def data(i: int):
            s = self.session(
                seed_offset + i,
                batch_size=batch_size,
                history_len=config.history_seq_len,
                num_candidates=config.candidate_seq_len,
                **kw,
            )
            if on_session is not None:
                on_session(i, s)
            return (
                self.to_batch(config, s, num_buckets),
                s.labels,
                np.ones(s.labels.shape[:2], bool),
            )

        return data

    def retrieval_data(
        self,
        config,
        num_buckets,
        log_q,
        *,
        batch_size: int,
        num_candidates: int = 16,
        seed_offset: int = 0,
        **kw,
    ):
        """``data(i) -> (batch, log_q [B], item [B], valid [B])`` for two-tower training.

        Each user's positive is the first of ``num_candidates`` impressions with a
        positive engagement (:data:`RETRIEVAL_POSITIVES`); users with none are
        marked invalid. ``log_q`` [num_posts] is the log sampling probability of
        each post as a positive (see :func:`positive_log_q`).
        """

        def data(i: int):
            s = self.session(
                seed_offset + i,
                batch_size=batch_size,
                history_len=config.history_seq_len,
                num_candidates=num_candidates,
                **kw,
            )
            item, valid = first_positive(s)
            one = s._replace(
                candidate_posts=item[:, None], candidate_surface=s.candidate_surface[:, :1]
            )
            return self.to_batch(config, one, num_buckets), log_q[item], item, valid

        return data


RETRIEVAL_POSITIVES = ("favorite", "reply", "repost", "share", "quote", "follow_author")
# What moves a user's interest and author memory: positive engagement, and posts that held
# the user's attention (dwell). Also the actions zeroed for a blocked author.
_POSITIVE_COLUMNS = [
    ACTIONS.index(a)
    for a in ("favorite", "reply", "repost", "share", "quote", "follow_author", "dwell",
              "profile_click", "share_via_dm", "share_via_copy_link")
]  # fmt: skip


def without_history(session: Session) -> Session:
    """``session`` with every history emptied (the no-history ablation): only the users
    and the candidates remain."""
    zero = np.zeros_like
    return session._replace(
        history_posts=zero(session.history_posts),
        history_actions=zero(session.history_actions),
        history_surface=zero(session.history_surface),
        history_mask=zero(session.history_mask),
    )


def shuffled_history(session: Session, seed: int) -> Session:
    """``session`` with each history's real items in a random order (padding stays at the
    end): the same contents without their order."""
    keys = np.random.default_rng(seed).random(session.history_mask.shape)
    order = np.argsort(np.where(session.history_mask, keys, 2.0), axis=1)

    def take(x):
        return np.take_along_axis(x, order if x.ndim == 2 else order[..., None], 1)

    return session._replace(
        history_posts=take(session.history_posts),
        history_actions=take(session.history_actions),
        history_surface=take(session.history_surface),
        history_mask=take(session.history_mask),
    )


def first_positive(session: Session) -> tuple[np.ndarray, np.ndarray]:
    """Each user's first candidate with a positive engagement: ``(post [B], valid [B])``."""
    columns = [ACTIONS.index(a) for a in RETRIEVAL_POSITIVES]
    engaged = session.labels[..., columns].any(-1)  # [B, C]
    first = engaged.argmax(1)
    return session.candidate_posts[np.arange(first.size), first], engaged.any(1)


def positive_log_q(world: World, sessions, prior: float = 1.0) -> np.ndarray:
    """Log of each post's share of positives in ``sessions`` (add-``prior`` smoothed): ``[P]``."""
    counts = np.full(world.config.num_posts, prior)
    for s in sessions:
        item, valid = first_positive(s)
        np.add.at(counts, item[valid], 1.0)
    return np.log(counts / counts.sum())


class UserState(NamedTuple):
    """What a user's past has left, at one moment. ``[...]`` indexes users (and, in a
    :class:`Timeline`, sessions); ``-1`` marks an empty author slot."""

    interest: np.ndarray  # [..., K] the current interest: long-term mixed with recent
    authors: np.ndarray  # [..., R] the last R authors engaged with
    blocked: np.ndarray  # [..., Rb] every author blocked or muted so far
    penalty: np.ndarray  # [..., K] topics recently said not_interested to, each at most 1


class Timeline(NamedTuple):
    """Every user's sessions in order. ``U`` users, ``T`` sessions of ``C`` impressions."""

    hours: np.ndarray  # [T] the hour of each session
    posts: np.ndarray  # [U, T, C] post indices shown
    surface: np.ndarray  # [U, T, C]
    probabilities: np.ndarray  # [U, T, C, 19] float32: the truth at that moment
    labels: np.ndarray  # [U, T, C, 19] uint8 0/1 drawn from it
    state: UserState  # arrays [U, T, ...]: each user's state before each session
    acted_order: np.ndarray  # [U, T*C] each user's impressions with an action first, in order
    acted_before: np.ndarray  # [U, T] how many of those came before session t


class Session(NamedTuple):
    """A batch of users at index level. ``B`` users, ``S`` history, ``C`` candidates."""

    users: np.ndarray  # [B] user indices
    history_posts: np.ndarray  # [B, S] post indices (0 where padded)
    history_actions: np.ndarray  # [B, S, 19] float32 0/1
    history_surface: np.ndarray  # [B, S]
    history_mask: np.ndarray  # [B, S] bool
    candidate_posts: np.ndarray  # [B, C] post indices
    candidate_surface: np.ndarray  # [B, C]
    probabilities: np.ndarray  # [B, C, 19] float32: the truth
    labels: np.ndarray  # [B, C, 19] float32 0/1 drawn from the truth


def _push(memory: np.ndarray, new: np.ndarray, valid: np.ndarray, keep: int | None = None):
    """Append ``new[valid]`` [B, C] to ``memory`` [B, R] in order; keep the last ``keep``
    entries per row (all of them, widening ``memory``, when ``keep`` is None)."""
    both = np.concatenate([memory, np.where(valid, new, -1)], axis=1)
    filled = both >= 0
    if keep is None:
        keep = max(int(filled.sum(1).max(initial=0)), memory.shape[1])
    recent = np.cumsum(filled[:, ::-1], axis=1)[:, ::-1] <= keep
    order = np.argsort(~(filled & recent), axis=1, kind="stable")[:, :keep]
    taken = np.take_along_axis(both, order, 1)
    return np.where(np.take_along_axis(filled & recent, order, 1), taken, -1)


def _check_sessions(timeline: Timeline, sessions: range) -> None:
    if len(sessions) == 0 or sessions.start < 0 or sessions.stop > timeline.posts.shape[1]:
        raise ValueError(f"sessions {sessions} not within the timeline's {timeline.posts.shape[1]}")


def _acted(actions: np.ndarray) -> np.ndarray:
    """Which impressions ``[..., 19]`` had an action, the history's criterion: bool ``[...]``
    (``dwell_time``, the last column, is a score, not an action)."""
    return actions[..., :-1].any(-1)


def _pad(memory: np.ndarray, width: int) -> np.ndarray:
    return np.pad(memory, ((0, 0), (0, width - memory.shape[1])), constant_values=-1)


def _gaussian_from_bits(h: np.ndarray) -> np.ndarray:
    """Standard normals from 64 random bits each (Box-Muller on two 32-bit halves)."""
    u1 = ((h >> np.uint64(32)).astype(np.float64) + 0.5) / 2**32
    u2 = ((h & np.uint64(0xFFFFFFFF)).astype(np.float64) + 0.5) / 2**32
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
