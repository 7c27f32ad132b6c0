"""A synthetic search marketplace that writes the contract's input tables.

``generate_world(WorldConfig(...), out)`` simulates W warm-up days (default 7), D history
days and one live day, and publishes, atomically, under ``out``: ``items/``, ``users/``,
``queries/`` (snapshot histories built from the log), ``events/dt=.../`` for every day
(warm-up, history and live: an hourly refresh at T on the live day reads that day's
events before T), ``candidates/dt=.../`` for days 1..D+1 (the warm-up days are a log
from before the candidates' retention, so no training row or score comes from them),
``world.json`` (config, counts, hidden weights) and ``_truth/`` (the hidden state).
Everything is drawn from numpy generators seeded by (seed, stream, day), so a seed gives
byte-identical files; all work is vectorised per day (no Python loop per event).

Hidden mechanics
----------------
Catalogue. K categories, each with a unit centroid in R^d (d = 8) and a lognormal median
price. Items come in *products*: most products are sold by one shop, a share
(``duplicate_share``) by 2..4 shops at once. Items of one product are near-duplicates:
same category, colour and latent vector (up to tiny noise), prices within ~5%, hidden
quality within 0.2 sd, different shops and ids. Ids are shuffled so they do not reveal
the grouping. Each day a few items are on promotion (price x 0.6..0.9).

Users. A hidden segment ties everything a profile can show to what the user wants: the
segment sets a category preference (three favourite categories per user -> a persistent
taste vector that never changes), a price sensitivity, and the distributions of
age_bucket, gender and region_id. Activity (requests per day) is lognormal: few heavy
users, many light ones.

Queries. An intent of 1-3 neighbouring categories; text = modifiers + category words.
Modifiers carry meaning: "cheap" doubles the request's price sensitivity, "deal" x1.5,
"premium" x0.4 and a heavier weight on quality, "best" favours quality; a colour word
rewards items of that colour and penalises others. Query popularity is Zipf. Each query
has a pool (items of its intent categories) with a hidden log-popularity per item, mostly
shared by near-duplicates, leaning to quality, drifting daily (mean-reverting random
walk): its hot items are what preference anchors can reveal.

Traffic. Each user makes Poisson(activity) requests a day at diurnal times, choosing a
query by Zipf popularity + 3 * <taste, query intent>. Recall gives C candidates (default
200): up to 70% from the query's pool sampled by its popularity (fewer when the pool is
smaller), the rest uniform noise (``recall_source`` says which), de-duplicated and sorted
by item id (candidate order leaks nothing). Impressions share the request's timestamp, so
a context built "strictly before" a request never sees that request's own events.

Utility of item i for request (u, q) shown in set S (weights in ``traffic.Mechanics``):
    2.0 <taste_u, v_i> + 0.8 logpop_q(i) (outside the pool: -3) + 1.5 [cat(i) in intent(q)]
    + 0.6 m_q quality_i - 1.2 ps_u,q log(price_i / category median) + colour term
and, on the shown set only,
    - 1.0 (log price_i - mean_S log price)     cheaper than the rest of the page helps
    - 0.9 #(near-duplicates of i shown above i)  redundancy
    - 0.7 log(position)                          position bias.
The upstream ranker sorts candidates by the utility WITHOUT the set terms plus N(0, 1)
noise; its top k (default 20) are impressions with positions 1..k.
P(click) = sigmoid(utility + b_click); P(add_to_cart | click) = sigmoid(0.8 m_q quality
- 0.6 ps log(relative price) + 0.5 taste + b_atc); P(order | add_to_cart) =
sigmoid(0.6 m_q quality - 0.8 ps log(relative price) + b_order). The three intercepts are
calibrated once on the first simulated day to ``target_ctr`` (5%), ``target_atc_per_click`` (30%) and
``target_order_per_atc`` (40%). Follow-up events come seconds to minutes after the
impression, clamped inside the same day.

Warm-up. The warm-up days replay day 1's prices and query popularity (the hidden state
starts moving on day 1). They exist so that day 1 is not special: its 7-day statistics,
preference anchors and users' histories come from a log, like every later day's. Only
sales_30d still fills up over the first 30 logged days, as a real 30-day counter would.

Feature tables. Item and query snapshots are stamped at 00:00 UTC of each logged day
after the first, through the live day, and use only the events of earlier days
(``stats``: ctr_7d, cvr_7d, sales_30d, popularity_7d); the first snapshot, stamped the
day before the log starts, comes from a pre-history prior. Users have one profile row
stamped the day before the log starts; a few move region once.
A small share of items (``unknown_item_share``) and users (``unknown_user_share``) never
get feature rows but appear in candidates and events, so unknown-id handling is exercised.
"""

from onepiece.world.config import WorldConfig
from onepiece.world.generate import WorldSummary, generate_world

__all__ = ["WorldConfig", "WorldSummary", "generate_world"]
