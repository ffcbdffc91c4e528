//! Walks a term and adds up its size with [`crate::size_model`], exactly or by sampling.
//!
//! The walk knows terms only through [`TermView`], which the NIF crate implements over
//! real Erlang terms and the tests implement over a model, so everything here is
//! checked without a VM.
//!
//! - **No recursion.** Work waits on a heap-allocated stack, so nesting depth is bounded
//!   by memory, not by the C stack (a recursive walk crashed the VM at ~3,000 levels).
//!   A container's frame leaves the stack as its last child is taken, so a chain of
//!   one-element containers a million deep needs one frame, not a million.
//! - **Sampling.** A collection larger than the sample count `k` is sized from about
//!   `k` of its elements, each weighted by how many elements it stands for
//!   (Horvitz–Thompson), so the estimate is unbiased:
//!   - tuples: one uniform pick in each of k equal blocks (stratified, so periodic or
//!     sorted data cannot fool it, unlike a fixed stride);
//!   - lists: the same, in a single pass over the spine although the length is not
//!     known in advance: blocks start one cell long and, whenever k of them are full,
//!     neighbours merge pairwise (keeping either pick with equal chance) and the block
//!     length doubles. That leaves between k/2 and k equal blocks plus a partial last
//!     one, each with a uniform pick;
//!   - maps of more than 32 keys: their first k entries, which come in hash order and
//!     so form a fair sample at O(k) cost; flat maps (up to 32 keys, in key order):
//!     stratified picks.
//!
//!   A collection's own words (cells, slots, trie nodes) never need sampling: they
//!   follow from its length, except a sampled hashmap's trie, which takes the expected
//!   node count. Collections met inside a sampled element take [`NESTED_SAMPLES`]
//!   picks, so nested collections cost k · 32 visits rather than k².
//! - **Budget.** An optional work budget makes the walk give up early
//!   ([`Interrupt::OverBudget`]), so that a caller on a normal scheduler can retry on a
//!   dirty one. One unit is about one term visited. An optional deadline makes it give
//!   up for good ([`Interrupt::Deadline`]), so that nobody works on an answer the
//!   caller stopped waiting for.

use crate::size_model::{
    self, expected_hashmap_words, flatmap_words, fun_words, hashmap_words, list_words, tuple_words,
    SMALL_MAP_LIMIT,
};

/// Picks taken from a collection that sits inside an element that was itself sampled.
pub const NESTED_SAMPLES: usize = 32;

/// List cells followed per unit of budget: following a tail is much cheaper than
/// sizing a term.
pub const CELLS_PER_UNIT: u64 = 8;

/// Units of work between two looks at the clock, when there is a time budget.
pub const CLOCK_EVERY: u64 = 256;

/// Longest list spine a walk with a budget follows before giving up: beyond this, a
/// list is long enough that a dirty scheduler is the place for it.
pub const BOUNDED_LIST_CELLS: u64 = 16_384;

/// Containers up to this many elements, walked whole, are expanded at once rather
/// than through a cursor frame.
const EAGER_LIMIT: usize = 32;

/// Bytes of a map key hashed per unit of budget.
pub const HASHED_BYTES_PER_UNIT: u64 = 64;

/// Why a walk stopped before the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interrupt {
    /// The work budget or the time budget ran out: a walk without them can finish.
    OverBudget,
    /// The deadline passed: the caller no longer wants the answer.
    Deadline,
}

/// One term, as the walk needs to see it.
#[derive(Debug)]
pub enum Node<T> {
    /// A term without children: its words and the bytes it keeps off the heap.
    Leaf {
        /// Heap words, as [`crate::size_model`] gives them.
        words: u64,
        /// Bytes of binary payload held off the process heap.
        off_heap_bytes: u64,
        /// Bytes a hash of the term reads (binaries, bignums).
        payload_bytes: u64,
    },
    /// A tuple of this arity; its elements come from [`TermView::element`].
    Tuple(usize),
    /// A non-empty list; its cells come from [`TermView::list_cell`].
    List,
    /// A map of `size` entries; they come from [`TermView::entries`].
    Map {
        /// Number of keys.
        size: usize,
    },
    /// A fun (local or external) that captured `captured` variables, which come from
    /// [`TermView::element`] on `env`.
    Fun {
        /// Number of captured variables.
        captured: usize,
        /// A term whose elements are the captured variables.
        env: T,
        /// Words the fun references besides its captured variables: the creator pid,
        /// when it is another node's.
        extra_words: u64,
    },
    /// A term the view cannot read: counted as `words`, and the size is not exact.
    Opaque {
        /// Its words as far as the view can tell.
        words: u64,
    },
}

/// Read access to terms.
pub trait TermView {
    /// A term handle, cheap to copy.
    type Term: Copy;
    /// The entries of a map, in the map's own order.
    type Entries: Iterator<Item = (Self::Term, Self::Term)>;

    /// Classifies `term`, in O(1).
    fn node(&mut self, term: Self::Term) -> Node<Self::Term>;

    /// Element `index` of a tuple, or captured variable `index` of a fun's `env`.
    fn element(&mut self, container: Self::Term, index: usize) -> Self::Term;

    /// Head and tail of a non-empty list; `None` for anything else.
    fn list_cell(&mut self, list: Self::Term) -> Option<(Self::Term, Self::Term)>;

    /// True for `[]`.
    fn is_empty_list(&mut self, term: Self::Term) -> bool;

    /// Iterates over the entries of a map.
    fn entries(&mut self, map: Self::Term) -> Self::Entries;

    /// The 32-bit hash the map implementation gives `key` at `round` (0 for the first
    /// eight trie levels, then 1, 2, ... after each rehash).
    fn key_hash(&mut self, key: Self::Term, round: u32) -> u32;

    /// True for terms held whole in their word, which take no heap words. Such terms
    /// are counted without visiting them; a view that cannot tell says `false`.
    fn is_immediate(&mut self, _term: Self::Term) -> bool {
        false
    }

    /// Hints that `term` will be visited soon. Sampled elements lie scattered over the
    /// heap, and visiting them one after another would wait for one cache miss at a
    /// time; prefetching a batch lets the misses overlap.
    fn prefetch(&mut self, _term: Self::Term) {}
}

/// How to walk.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Elements to size per collection; `None` walks everything.
    pub samples: Option<usize>,
    /// Seed of the sample picks.
    pub seed: u64,
    /// Most units of work to do; `None` for no limit.
    pub budget: Option<u64>,
    /// Most time to spend, checked every [`CLOCK_EVERY`] units: a safety net under
    /// `budget` for terms that cost more than their units say. `None` for no limit.
    pub time_budget: Option<std::time::Duration>,
    /// When to give up for good ([`Interrupt::Deadline`]), checked every
    /// [`CLOCK_EVERY`] units. `None` for never.
    pub deadline: Option<std::time::Instant>,
}

impl Settings {
    /// A full walk without a budget.
    pub fn exact() -> Self {
        Settings {
            samples: None,
            seed: 0,
            budget: None,
            time_budget: None,
            deadline: None,
        }
    }
}

/// The size of a term, exact or estimated.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Size {
    /// Heap words, as `:erts_debug.flat_size/1` counts them.
    pub words: f64,
    /// Bytes of off-heap binaries referenced, counted per reference.
    pub off_heap_bytes: f64,
    /// True when every term was visited and no hashmap trie was estimated.
    pub exact: bool,
    /// Terms visited.
    pub visited: u64,
    /// Terms in all (estimated when sampled): every element, key, value, improper
    /// tail and captured variable, and the term itself.
    pub terms: f64,
    /// Units of work spent.
    pub work: u64,
}

/// Sizes `root` through `view`.
///
/// Time: O(terms) for a full walk. Sampled: O(k) per collection met, plus the spine of
/// every list met, where k is the sample count.
pub fn size_of<V: TermView>(
    view: &mut V,
    root: V::Term,
    settings: &Settings,
) -> Result<Size, Interrupt> {
    let samples = settings.samples.map(|s| s.max(1));
    let mut walk = Walk {
        view,
        stack: vec![Frame::Term(
            root,
            Ctx {
                weight: 1.0,
                nested: false,
                in_key: false,
            },
        )],
        map_entries: Vec::new(),
        hashed_maps: Vec::new(),
        list_picks: Vec::new(),
        rng: SplitMix64::new(settings.seed),
        samples: samples.unwrap_or(usize::MAX),
        nested_samples: samples.map_or(usize::MAX, |s| s.min(NESTED_SAMPLES)),
        sampling: samples.is_some(),
        budget: settings.budget.unwrap_or(u64::MAX),
        time_limit: settings
            .time_budget
            .map(|limit| std::time::Instant::now() + limit),
        deadline: settings.deadline,
        next_clock: CLOCK_EVERY,
        size: Size {
            words: 0.0,
            off_heap_bytes: 0.0,
            exact: true,
            visited: 0,
            terms: 0.0,
            work: 0,
        },
    };
    walk.run()?;
    Ok(walk.size)
}

#[derive(Clone, Copy, Debug)]
struct Ctx {
    /// How many terms each term visited here stands for.
    weight: f64,
    /// Inside an element picked by sampling.
    nested: bool,
    /// Inside a map key that will be hashed: its bytes count toward the budget.
    in_key: bool,
}

enum Frame<T> {
    Term(T, Ctx),
    /// Elements of a tuple or captured variables of a fun.
    Items {
        container: T,
        picks: Picks,
        ctx: Ctx,
    },
    /// The rest of a list walked whole: a cell, or the improper tail.
    Cells {
        rest: T,
        ctx: Ctx,
    },
    /// The entries of the hashmap walked whole whose iterator is last in
    /// `Walk::map_entries`.
    Entries {
        ctx: Ctx,
    },
    /// Hash `key` once it has been walked (its walk started at `work_before`).
    HashKey {
        key: T,
        work_before: u64,
    },
    /// All keys of a walked hashmap are hashed: count its trie.
    MapNodes {
        size: usize,
        weight: f64,
    },
}

/// Positions of the elements to visit in a collection, in increasing order, each with
/// the number of elements it stands for.
#[derive(Clone, Copy, Debug)]
enum Picks {
    /// Every element.
    All { n: usize, next: usize },
    /// One uniform pick in each of k blocks [b·n/k, (b+1)·n/k).
    Strata { n: usize, k: usize, block: usize },
}

impl Picks {
    fn next(&mut self, rng: &mut SplitMix64) -> Option<(usize, f64)> {
        match self {
            Picks::All { n, next } => (*next < *n).then(|| {
                *next += 1;
                (*next - 1, 1.0)
            }),
            Picks::Strata { n, k, block } => (*block < *k).then(|| {
                let start = block_start(*block, *n, *k);
                let end = block_start(*block + 1, *n, *k);
                *block += 1;
                let len = end - start;
                (start + rng.below(len), len as f64)
            }),
        }
    }

    fn is_done(&self) -> bool {
        match *self {
            Picks::All { n, next } => next >= n,
            Picks::Strata { k, block, .. } => block >= k,
        }
    }

    fn sampled(&self) -> bool {
        !matches!(self, Picks::All { .. })
    }

    /// How many picks are left.
    fn len(&self) -> usize {
        match *self {
            Picks::All { n, next } => n - next,
            Picks::Strata { k, block, .. } => k - block,
        }
    }
}

/// Start of block `b` of `k` over `n` elements; blocks differ in length by at most one.
fn block_start(b: usize, n: usize, k: usize) -> usize {
    (b as u128 * n as u128 / k as u128) as usize
}

/// The keys of a hashmap walked whole, as hashed so far: (hash, key index) pairs, and
/// the keys, kept for the rare rehash of whole-hash collisions.
type HashedKeys<T> = (Vec<(u32, usize)>, Vec<T>);

struct Walk<'v, V: TermView> {
    view: &'v mut V,
    stack: Vec<Frame<V::Term>>,
    /// Iterators of the maps whose `Entries` frames are on the stack, innermost last.
    /// Kept apart so that frames stay small and no iterator is boxed.
    map_entries: Vec<V::Entries>,
    /// The hashmaps being walked whole, innermost last.
    hashed_maps: Vec<HashedKeys<V::Term>>,
    /// Picks of the list being sampled, reused from list to list.
    list_picks: Vec<V::Term>,
    rng: SplitMix64,
    samples: usize,
    nested_samples: usize,
    sampling: bool,
    budget: u64,
    /// When the time budget runs out.
    time_limit: Option<std::time::Instant>,
    /// When to give up for good.
    deadline: Option<std::time::Instant>,
    /// Work at which to look at the clock next.
    next_clock: u64,
    size: Size,
}

impl<V: TermView> Walk<'_, V> {
    fn run(&mut self) -> Result<(), Interrupt> {
        while let Some(frame) = self.stack.pop() {
            self.charge(1)?;
            match frame {
                Frame::Term(term, ctx) => self.visit(term, ctx)?,
                Frame::Items {
                    container,
                    mut picks,
                    ctx,
                } => {
                    if let Some((position, weight)) = picks.next(&mut self.rng) {
                        let element = self.view.element(container, position);
                        let child = child_ctx(ctx, picks.sampled(), weight);
                        if !picks.is_done() {
                            self.stack.push(Frame::Items {
                                container,
                                picks,
                                ctx,
                            });
                        }
                        self.emit(element, child)?;
                    }
                }
                Frame::Cells { rest, ctx } => match self.view.list_cell(rest) {
                    Some((head, tail)) => {
                        self.size.words += ctx.weight * list_words(1) as f64;
                        // Nothing stays behind for the last cell, so nesting in the
                        // last element costs no stack.
                        if !self.view.is_empty_list(tail) {
                            self.stack.push(Frame::Cells { rest: tail, ctx });
                        }
                        self.emit(head, ctx)?;
                    }
                    // An improper tail (`[]` is never pushed).
                    None => self.visit(rest, ctx)?,
                },
                Frame::Entries { ctx } => self.next_hashed_entry(ctx)?,
                Frame::HashKey { key, work_before } => {
                    // Hashing reads the key again: charge what walking it cost.
                    self.charge(self.size.work - work_before)?;
                    let hash = self.view.key_hash(key, 0);
                    let (hashes, keys) = self.hashed_maps.last_mut().expect("pushed with its map");
                    hashes.push((hash, keys.len()));
                    keys.push(key);
                }
                Frame::MapNodes { size, weight } => {
                    let (mut hashes, keys) = self.hashed_maps.pop().expect("pushed with its map");
                    // Sorting the hashes: cheap next to hashing the keys.
                    self.charge(hashes.len() as u64 / 16)?;
                    let view = &mut *self.view;
                    let nodes = size_model::count_hashmap_nodes(&mut hashes, |index, round| {
                        view.key_hash(keys[index], round)
                    });
                    self.size.words += weight * hashmap_words(size, nodes) as f64;
                }
            }
        }
        Ok(())
    }

    /// Schedules `term` for a visit, or counts it at once when it is an immediate: most
    /// elements of a real state are, and a frame round trip would cost more than them.
    /// Each child costs a unit here, whether or not it is visited later: containers are
    /// expanded in one go, and the expansion must not outrun the budget.
    #[inline]
    fn emit(&mut self, term: V::Term, ctx: Ctx) -> Result<(), Interrupt> {
        self.charge(1)?;
        if self.view.is_immediate(term) {
            self.size.visited += 1;
            self.size.terms += ctx.weight;
        } else {
            // Its siblings are emitted before it is visited: time for the fetch.
            self.view.prefetch(term);
            self.stack.push(Frame::Term(term, ctx));
        }
        Ok(())
    }

    /// Takes the next entry of the innermost hashmap walked whole: its key is walked,
    /// then hashed, then its value walked.
    fn next_hashed_entry(&mut self, ctx: Ctx) -> Result<(), Interrupt> {
        let entries = self.map_entries.last_mut().expect("pushed with its frame");
        let Some((key, value)) = entries.next() else {
            self.map_entries.pop();
            return Ok(());
        };
        self.stack.push(Frame::Entries { ctx });
        self.emit(value, ctx)?;
        self.stack.push(Frame::HashKey {
            key,
            work_before: self.size.work,
        });
        let key_ctx = Ctx {
            in_key: true,
            ..ctx
        };
        self.emit(key, key_ctx)
    }

    /// Counts one term and schedules its children.
    fn visit(&mut self, term: V::Term, ctx: Ctx) -> Result<(), Interrupt> {
        let w = ctx.weight;
        self.size.visited += 1;
        self.size.terms += w;
        match self.view.node(term) {
            Node::Leaf {
                words,
                off_heap_bytes,
                payload_bytes,
            } => {
                self.size.words += w * words as f64;
                self.size.off_heap_bytes += w * off_heap_bytes as f64;
                let hashing = if ctx.in_key {
                    payload_bytes / HASHED_BYTES_PER_UNIT
                } else {
                    0
                };
                self.charge(hashing)?;
            }
            Node::Tuple(arity) => {
                self.size.words += w * tuple_words(arity) as f64;
                let picks = self.strata(arity, ctx);
                self.expand_items(term, picks, ctx)?;
            }
            Node::Fun {
                captured,
                env,
                extra_words,
            } => {
                self.size.words += w * (fun_words(captured) + extra_words) as f64;
                // Captured variables are part of one term: never sampled.
                let picks = Picks::All {
                    n: captured,
                    next: 0,
                };
                self.expand_items(env, picks, ctx)?;
            }
            Node::Opaque { words } => {
                self.size.words += w * words as f64;
                self.size.exact = false;
            }
            Node::List if self.sampling => self.sample_list(term, ctx)?,
            Node::List => self.stack.push(Frame::Cells { rest: term, ctx }),
            Node::Map { size } => self.visit_map(term, size, ctx)?,
        }
        Ok(())
    }

    /// Schedules the picked elements of a tuple or fun: all at once when sampled (and
    /// prefetched) or few, else through a cursor frame.
    fn expand_items(
        &mut self,
        container: V::Term,
        mut picks: Picks,
        ctx: Ctx,
    ) -> Result<(), Interrupt> {
        let sampled = picks.sampled();
        if !sampled && picks.len() > EAGER_LIMIT {
            self.stack.push(Frame::Items {
                container,
                picks,
                ctx,
            });
            return Ok(());
        }
        while let Some((position, weight)) = picks.next(&mut self.rng) {
            let element = self.view.element(container, position);
            if sampled {
                self.view.prefetch(element);
            }
            self.emit(element, child_ctx(ctx, sampled, weight))?;
        }
        Ok(())
    }

    /// Walks the spine of `list` once, picking elements in doubling blocks (see the
    /// module docs), and schedules the picks.
    fn sample_list(&mut self, list: V::Term, ctx: Ctx) -> Result<(), Interrupt> {
        // Merging needs pairs: an odd limit rounds up, so lists up to the limit are
        // still walked whole.
        let limit = self.limit(ctx);
        let k = limit.saturating_add(limit & 1).max(2);
        // One buffer serves every list: each is done with it before the next starts.
        let mut picks = std::mem::take(&mut self.list_picks);
        picks.clear();
        let mut block_len = 1usize;
        let mut pick = None;
        let mut cells = 0u64;
        let mut rest = list;
        // Walk block by block: take each block's pick on the way through it. The walk
        // ends inside a block (possibly before its first cell), returned as its first
        // cell and how many cells it has.
        let (block_first, in_block) = 'blocks: loop {
            if picks.len() == k {
                // Merge only if the list goes on: a list of exactly k is walked whole.
                if self.view.list_cell(rest).is_none() {
                    break 'blocks (rest, 0);
                }
                self.merge_pairs(&mut picks);
                block_len *= 2;
            }
            let block_first = rest;
            let pick_at = self.rng.below(block_len);
            let mut in_block = 0usize;
            while in_block < block_len {
                let Some((head, tail)) = self.view.list_cell(rest) else {
                    break 'blocks (block_first, in_block);
                };
                if in_block == pick_at {
                    if block_len > 1 {
                        self.view.prefetch(head);
                    }
                    pick = Some(head);
                }
                in_block += 1;
                rest = tail;
            }
            picks.push(pick.take().expect("the pick lies inside its block"));
            cells += block_len as u64;
            // A bounded walk hands a long list over early rather than spend its whole
            // budget on the spine and then start again.
            let bounded = self.budget != u64::MAX || self.time_limit.is_some();
            if (bounded && cells > BOUNDED_LIST_CELLS)
                || self.size.work + cells / CELLS_PER_UNIT > self.budget
            {
                return Err(Interrupt::OverBudget);
            }
        };
        cells += in_block as u64;
        self.charge(cells / CELLS_PER_UNIT)?;
        self.size.words += ctx.weight * list_words(1) as f64 * cells as f64;
        if !self.view.is_empty_list(rest) {
            self.stack.push(Frame::Term(rest, ctx));
        }
        let sampled = block_len > 1;
        if sampled {
            self.size.exact = false;
        }
        if in_block > 0 {
            // A partial last block: its pick must be uniform over the cells it has. A
            // pick offset below its length already is; otherwise draw again.
            let head = match pick {
                Some(head) => head,
                None => {
                    let mut cell = block_first;
                    for _ in 0..self.rng.below(in_block) {
                        cell = self.view.list_cell(cell).expect("counted cells").1;
                    }
                    self.view.list_cell(cell).expect("counted cells").0
                }
            };
            self.emit(head, child_ctx(ctx, sampled, in_block as f64))?;
        }
        let child = child_ctx(ctx, sampled, block_len as f64);
        for &head in picks.iter() {
            self.emit(head, child)?;
        }
        self.list_picks = picks;
        Ok(())
    }

    /// Merges neighbouring blocks pairwise, keeping one pick of each pair at random.
    fn merge_pairs(&mut self, picks: &mut Vec<V::Term>) {
        let mut kept = 0;
        for pair in 0..picks.len() / 2 {
            let chosen = 2 * pair + (self.rng.next_u64() & 1) as usize;
            picks[kept] = picks[chosen];
            kept += 1;
        }
        picks.truncate(kept);
    }

    fn visit_map(&mut self, map: V::Term, size: usize, ctx: Ctx) -> Result<(), Interrupt> {
        let w = ctx.weight;
        let k = self.limit(ctx);
        if size == 0 {
            self.size.words += w * flatmap_words(0) as f64;
        } else if size > SMALL_MAP_LIMIT && size <= k {
            // Walked whole: the trie's exact node count needs every key's hash.
            self.stack.push(Frame::MapNodes { size, weight: w });
            self.hashed_maps
                .push((Vec::with_capacity(size), Vec::with_capacity(size)));
            let entries = self.view.entries(map);
            self.map_entries.push(entries);
            self.stack.push(Frame::Entries { ctx });
        } else if size > SMALL_MAP_LIMIT {
            // Sampled: the first k entries, which come in hash order.
            self.size.exact = false;
            self.size.words += w * expected_hashmap_words(size as u64);
            let child = child_ctx(ctx, true, size as f64 / k as f64);
            let mut entries = self.view.entries(map);
            for (key, value) in entries.by_ref().take(k) {
                self.view.prefetch(key);
                self.view.prefetch(value);
                self.emit(value, child)?;
                self.emit(key, child)?;
            }
        } else {
            // A flat map: its entries come in key order, so a sample must spread over
            // all of them; it is small, so they are all read.
            self.size.words += w * flatmap_words(size) as f64;
            let mut picks = if size <= k {
                Picks::All { n: size, next: 0 }
            } else {
                self.size.exact = false;
                Picks::Strata {
                    n: size,
                    k,
                    block: 0,
                }
            };
            let sampled = picks.sampled();
            let mut entries = self.view.entries(map).enumerate();
            while let Some((position, weight)) = picks.next(&mut self.rng) {
                let Some((_, (key, value))) = entries.find(|(i, _)| *i == position) else {
                    break;
                };
                let child = child_ctx(ctx, sampled, weight);
                self.emit(value, child)?;
                self.emit(key, child)?;
            }
        }
        Ok(())
    }

    /// Picks for a tuple's elements.
    fn strata(&mut self, n: usize, ctx: Ctx) -> Picks {
        let k = self.limit(ctx);
        if n <= k {
            Picks::All { n, next: 0 }
        } else {
            self.size.exact = false;
            Picks::Strata { n, k, block: 0 }
        }
    }

    /// Adds `units` of work, failing once past the budget, the time budget or the
    /// deadline.
    fn charge(&mut self, units: u64) -> Result<(), Interrupt> {
        self.size.work += units;
        if self.size.work > self.budget {
            return Err(Interrupt::OverBudget);
        }
        if self.size.work >= self.next_clock || units >= CLOCK_EVERY {
            self.next_clock = self.size.work + CLOCK_EVERY;
            if self.time_limit.is_some() || self.deadline.is_some() {
                let now = std::time::Instant::now();
                if self.deadline.is_some_and(|deadline| now > deadline) {
                    return Err(Interrupt::Deadline);
                }
                if self.time_limit.is_some_and(|limit| now > limit) {
                    return Err(Interrupt::OverBudget);
                }
            }
        }
        Ok(())
    }

    fn limit(&self, ctx: Ctx) -> usize {
        if ctx.nested {
            self.nested_samples
        } else {
            self.samples
        }
    }
}

fn child_ctx(parent: Ctx, sampled: bool, weight: f64) -> Ctx {
    Ctx {
        weight: parent.weight * weight,
        nested: parent.nested || sampled,
        in_key: parent.in_key,
    }
}

/// SplitMix64: tiny, fast, and good enough to place sample picks.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose stream depends only on `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits. Time: O(1).
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` ≥ 1), by the multiply-shift method; the bias is below
    /// n / 2^64. Time: O(1).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::size_model::{binary_words, int64_words, off_heap_bytes, BinaryHome};
    use proptest::prelude::*;

    /// A model of Erlang terms, sized by the same rules as real ones.
    #[derive(Clone, Debug)]
    enum M {
        Int(i64),
        Float,
        Bin(usize, BinaryHome),
        Tuple(Vec<M>),
        List(Vec<M>, Option<Box<M>>),
        /// Entries in iteration order; keys are distinct.
        Map(Vec<(M, M)>),
        Fun(Vec<M>),
    }

    /// A deterministic stand-in for OTP's key hash.
    fn model_hash(term: &M, round: u32) -> u32 {
        let text = format!("{term:?}/{round}");
        let mut rng = SplitMix64::new(text.bytes().fold(0xCBF2_9CE4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3)
        }));
        rng.next_u64() as u32
    }

    /// The reference size: a plain recursive definition.
    fn reference(term: &M) -> (u64, u64, u64) {
        let mut words = 0;
        let mut off_heap = 0;
        let mut terms = 1;
        let mut add = |(w, o, t): (u64, u64, u64)| {
            words += w;
            off_heap += o;
            terms += t;
        };
        match term {
            M::Int(v) => add((int64_words(*v), 0, 0)),
            M::Float => add((2, 0, 0)),
            M::Bin(len, home) => add((binary_words(*len, *home), off_heap_bytes(*len, *home), 0)),
            M::Tuple(items) => {
                add((tuple_words(items.len()), 0, 0));
                items.iter().for_each(|i| add(reference(i)));
            }
            M::Fun(env) => {
                add((fun_words(env.len()), 0, 0));
                env.iter().for_each(|i| add(reference(i)));
            }
            M::List(items, tail) => {
                add((list_words(items.len()), 0, 0));
                items.iter().for_each(|i| add(reference(i)));
                if let Some(tail) = tail {
                    add(reference(tail));
                }
            }
            M::Map(entries) => {
                let structure = if entries.len() <= SMALL_MAP_LIMIT {
                    flatmap_words(entries.len())
                } else {
                    let mut hashes: Vec<(u32, usize)> = entries
                        .iter()
                        .map(|(k, _)| model_hash(k, 0))
                        .zip(0..)
                        .collect();
                    let nodes = size_model::count_hashmap_nodes(&mut hashes, |i, round| {
                        model_hash(&entries[i].0, round)
                    });
                    hashmap_words(entries.len(), nodes)
                };
                add((structure, 0, 0));
                for (k, v) in entries {
                    add(reference(k));
                    add(reference(v));
                }
            }
        }
        (words, off_heap, terms)
    }

    /// A model term or one list cell inside a model list.
    #[derive(Clone, Copy, Debug)]
    enum T<'a> {
        Term(&'a M),
        Cell(&'a M, usize),
        Nil,
    }

    /// Views model terms; it lives as long as the models it hands out handles to.
    struct View<'a>(std::marker::PhantomData<&'a M>);

    impl<'a> TermView for View<'a> {
        type Term = T<'a>;
        type Entries = std::vec::IntoIter<(T<'a>, T<'a>)>;

        fn node(&mut self, term: T<'a>) -> Node<T<'a>> {
            let m = match term {
                T::Nil => return leaf(0, 0, 0),
                T::Cell(..) => return Node::List,
                T::Term(m) => m,
            };
            match m {
                M::Int(v) => leaf(int64_words(*v), 0, 8),
                M::Float => leaf(2, 0, 8),
                M::Bin(len, home) => leaf(
                    binary_words(*len, *home),
                    off_heap_bytes(*len, *home),
                    *len as u64,
                ),
                M::Tuple(items) => Node::Tuple(items.len()),
                M::Fun(env) => Node::Fun {
                    captured: env.len(),
                    env: term,
                    extra_words: 0,
                },
                M::List(items, _) if items.is_empty() => leaf(0, 0, 0),
                M::List(..) => Node::List,
                M::Map(entries) => Node::Map {
                    size: entries.len(),
                },
            }
        }

        fn element(&mut self, container: T<'a>, index: usize) -> T<'a> {
            match container {
                T::Term(M::Tuple(items) | M::Fun(items)) => T::Term(&items[index]),
                _ => unreachable!("not a container"),
            }
        }

        fn is_immediate(&mut self, term: T<'a>) -> bool {
            matches!(term, T::Nil) || matches!(term, T::Term(M::Int(v)) if int64_words(*v) == 0)
        }

        fn list_cell(&mut self, list: T<'a>) -> Option<(T<'a>, T<'a>)> {
            let (m, at) = match list {
                T::Term(m @ M::List(items, _)) if !items.is_empty() => (m, 0),
                T::Cell(m, at) => (m, at),
                _ => return None,
            };
            let M::List(items, tail) = m else {
                unreachable!()
            };
            let rest = if at + 1 < items.len() {
                T::Cell(m, at + 1)
            } else {
                match tail {
                    None => T::Nil,
                    Some(tail) => T::Term(tail),
                }
            };
            Some((T::Term(&items[at]), rest))
        }

        fn is_empty_list(&mut self, term: T<'a>) -> bool {
            matches!(term, T::Nil)
        }

        fn entries(&mut self, map: T<'a>) -> Self::Entries {
            let T::Term(M::Map(entries)) = map else {
                unreachable!()
            };
            entries
                .iter()
                .map(|(k, v)| (T::Term(k), T::Term(v)))
                .collect::<Vec<_>>()
                .into_iter()
        }

        fn key_hash(&mut self, key: T<'a>, round: u32) -> u32 {
            let T::Term(m) = key else { unreachable!() };
            model_hash(m, round)
        }
    }

    fn leaf<T>(words: u64, off_heap_bytes: u64, payload_bytes: u64) -> Node<T> {
        Node::Leaf {
            words,
            off_heap_bytes,
            payload_bytes,
        }
    }

    fn size(term: &M, settings: &Settings) -> Result<Size, Interrupt> {
        size_of(&mut View(std::marker::PhantomData), T::Term(term), settings)
    }

    fn sampled(samples: usize, seed: u64) -> Settings {
        Settings {
            samples: Some(samples),
            seed,
            ..Settings::exact()
        }
    }

    fn leaf_term() -> impl Strategy<Value = M> {
        prop_oneof![
            any::<i64>().prop_map(M::Int),
            Just(M::Float),
            (0usize..200, any::<bool>()).prop_map(|(len, heap)| {
                let home = if heap && len <= 64 {
                    BinaryHome::Heap
                } else {
                    BinaryHome::OffHeap
                };
                M::Bin(len, home)
            }),
        ]
    }

    fn any_term() -> impl Strategy<Value = M> {
        leaf_term().prop_recursive(5, 400, 40, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(M::Tuple),
                proptest::collection::vec(inner.clone(), 0..3).prop_map(M::Fun),
                // An improper tail is never itself a list (that would just continue the
                // spine), and `[] ++ tail` is the tail itself.
                (
                    proptest::collection::vec(inner.clone(), 0..40),
                    proptest::option::of(leaf_term().prop_map(Box::new))
                )
                    .prop_map(|(items, tail)| {
                        let tail = if items.is_empty() { None } else { tail };
                        M::List(items, tail)
                    }),
                // Integer keys keep keys distinct; sizes cross the flat-map limit.
                proptest::collection::vec(inner, 0..45).prop_map(|values| M::Map(
                    values
                        .into_iter()
                        .enumerate()
                        .map(|(i, v)| (M::Int(i as i64 * 7919), v))
                        .collect()
                )),
            ]
        })
    }

    proptest! {
        #[test]
        fn exact_walk_matches_the_reference(term in any_term()) {
            let (words, off_heap, terms) = reference(&term);
            let got = size(&term, &Settings::exact()).unwrap();
            prop_assert_eq!(got.words, words as f64);
            prop_assert_eq!(got.off_heap_bytes, off_heap as f64);
            prop_assert_eq!(got.terms, terms as f64);
            prop_assert_eq!(got.visited, terms);
            prop_assert!(got.exact);
        }

        #[test]
        fn sampling_above_every_collection_is_exact(term in any_term(), seed in any::<u64>()) {
            let exact = size(&term, &Settings::exact()).unwrap();
            let got = size(&term, &sampled(1000, seed)).unwrap();
            // Only the work differs: lists are walked differently when sampling.
            prop_assert_eq!(Size { work: 0, ..got }, Size { work: 0, ..exact });
        }

        #[test]
        fn sampled_walks_are_deterministic(term in any_term(), seed in any::<u64>()) {
            let a = size(&term, &sampled(3, seed)).unwrap();
            let b = size(&term, &sampled(3, seed)).unwrap();
            prop_assert_eq!(a, b);
        }

        #[test]
        fn a_budget_either_suffices_or_interrupts(term in any_term(), budget in 0u64..300) {
            let exact = size(&term, &Settings::exact()).unwrap();
            let bounded = Settings { budget: Some(budget), ..Settings::exact() };
            match size(&term, &bounded) {
                Ok(got) => {
                    prop_assert_eq!(got, exact);
                    prop_assert!(got.work <= budget);
                }
                Err(Interrupt::OverBudget) => prop_assert!(exact.work > budget),
                Err(Interrupt::Deadline) => prop_assert!(false, "no deadline was set"),
            }
        }

        #[test]
        fn picks_cover_blocks_in_order(n in 1usize..5000, k in 1usize..300, seed in any::<u64>()) {
            let mut rng = SplitMix64::new(seed);
            let mut picks = if n <= k { Picks::All { n, next: 0 } } else { Picks::Strata { n, k, block: 0 } };
            let mut last = None;
            let mut covered = 0.0;
            while let Some((position, weight)) = picks.next(&mut rng) {
                prop_assert!(position < n);
                prop_assert!(last.is_none_or(|l| position > l));
                last = Some(position);
                covered += weight;
            }
            prop_assert!(picks.is_done());
            prop_assert_eq!(covered, n as f64);
        }
    }

    /// A view whose every term takes a tenth of a millisecond (or more) to read.
    struct Slow<'a>(View<'a>);

    impl<'a> TermView for Slow<'a> {
        type Term = T<'a>;
        type Entries = std::vec::IntoIter<(T<'a>, T<'a>)>;

        fn node(&mut self, term: T<'a>) -> Node<T<'a>> {
            std::thread::sleep(std::time::Duration::from_micros(100));
            self.0.node(term)
        }
        fn element(&mut self, container: T<'a>, index: usize) -> T<'a> {
            self.0.element(container, index)
        }
        fn list_cell(&mut self, list: T<'a>) -> Option<(T<'a>, T<'a>)> {
            self.0.list_cell(list)
        }
        fn is_empty_list(&mut self, term: T<'a>) -> bool {
            self.0.is_empty_list(term)
        }
        fn entries(&mut self, map: T<'a>) -> Self::Entries {
            self.0.entries(map)
        }
        fn key_hash(&mut self, key: T<'a>, round: u32) -> u32 {
            self.0.key_hash(key, round)
        }
    }

    /// Walks 4,000 floats through [`Slow`] with `settings` (at least 0.4 s unbounded);
    /// returns the result and how long it took. Stopping after a 20 ms budget, it
    /// looks at the clock every [`CLOCK_EVERY`] units, about 128 floats.
    fn slow_walk(settings: &Settings) -> (Result<Size, Interrupt>, std::time::Duration) {
        let term = M::Tuple((0..4000).map(|_| M::Float).collect());
        let started = std::time::Instant::now();
        let result = size_of(
            &mut Slow(View(std::marker::PhantomData)),
            T::Term(&term),
            settings,
        );
        (result, started.elapsed())
    }

    #[test]
    fn a_time_budget_stops_walks_that_cost_more_than_their_units() {
        let (result, elapsed) = slow_walk(&Settings {
            budget: Some(1_000_000),
            time_budget: Some(std::time::Duration::from_millis(20)),
            ..Settings::exact()
        });
        assert_eq!(result, Err(Interrupt::OverBudget));
        assert!(
            elapsed < std::time::Duration::from_millis(200),
            "{elapsed:?}"
        );
    }

    #[test]
    fn a_deadline_stops_walks_for_good() {
        let now = std::time::Instant::now();
        let (result, elapsed) = slow_walk(&Settings {
            deadline: Some(now + std::time::Duration::from_millis(20)),
            ..Settings::exact()
        });
        assert_eq!(result, Err(Interrupt::Deadline));
        assert!(
            elapsed < std::time::Duration::from_millis(200),
            "{elapsed:?}"
        );
        // A deadline far off changes nothing.
        let term = M::Tuple((0..200).map(|_| M::Float).collect());
        let settings = Settings {
            deadline: Some(now + std::time::Duration::from_secs(3600)),
            ..Settings::exact()
        };
        assert_eq!(
            size(&term, &settings).unwrap(),
            size(&term, &Settings::exact()).unwrap()
        );
    }

    #[test]
    fn sampled_sizes_are_unbiased() {
        // Periodic element sizes defeat a fixed stride; a stratified pick does not.
        let items: Vec<M> = (0..10_000)
            .map(|i| match i % 4 {
                0 => M::Tuple(vec![M::Float; 9]),
                _ => M::Int(1),
            })
            .collect();
        for term in [M::List(items.clone(), None), M::Tuple(items)] {
            let exact = size(&term, &Settings::exact()).unwrap().words;
            let seeds = 200;
            let mean: f64 = (0..seeds)
                .map(|seed| size(&term, &sampled(64, seed)).unwrap().words)
                .sum::<f64>()
                / seeds as f64;
            assert!((mean - exact).abs() / exact < 0.01, "{mean} vs {exact}");
        }
    }

    #[test]
    fn large_maps_use_the_trie_model_when_sampled() {
        let entries: Vec<(M, M)> = (0..20_000).map(|i| (M::Int(i), M::Float)).collect();
        let map = M::Map(entries);
        let exact = size(&map, &Settings::exact()).unwrap();
        let estimate = size(&map, &sampled(256, 1)).unwrap();
        assert!(!estimate.exact);
        assert_eq!(estimate.visited, 1 + 2 * 256);
        assert!((estimate.words - exact.words).abs() / exact.words < 0.005);
        assert_eq!(estimate.terms, exact.terms);
    }

    #[test]
    fn nested_collections_take_fewer_picks() {
        let inner = M::List((0..1000).map(|_| M::Float).collect(), None);
        let outer = M::List(vec![inner; 1000], None);
        let got = size(&outer, &sampled(100, 7)).unwrap();
        // At most 101 inner lists are picked, each sized from at most 33 elements.
        assert!(
            got.visited <= 1 + 101 * (1 + NESTED_SAMPLES as u64 + 1),
            "{got:?}"
        );
        assert!(got.visited > 50 * (1 + NESTED_SAMPLES as u64 / 2));
        let exact = size(&outer, &Settings::exact()).unwrap();
        assert_eq!(
            got.words, exact.words,
            "same-size elements estimate exactly"
        );
        assert_eq!(got.terms, exact.terms);
    }

    #[test]
    fn list_picks_stay_between_half_and_all_of_k() {
        for n in [1usize, 2, 63, 64, 65, 127, 128, 129, 1000, 4097, 100_000] {
            let list = M::List((0..n as i64).map(M::Int).collect(), None);
            for k in [1usize, 2, 3, 64, 65] {
                let got = size(&list, &sampled(k, n as u64)).unwrap();
                let k_even = (k + (k & 1)).max(2);
                let picks = got.visited - 1;
                if n <= k {
                    assert_eq!(picks, n as u64, "n {n} k {k}");
                    assert!(got.exact);
                } else {
                    assert!(picks as usize <= k_even + 1, "n {n} k {k}: {picks}");
                    assert!(picks as usize >= k_even / 2, "n {n} k {k}: {picks}");
                }
                assert_eq!(got.terms, n as f64 + 1.0, "weights add up to the length");
            }
        }
    }

    #[test]
    fn a_million_levels_deep() {
        let mut term = M::Int(1);
        for i in 0..1_000_000 {
            term = match i % 3 {
                0 => M::Tuple(vec![term]),
                1 => M::List(vec![term], None),
                _ => M::Fun(vec![term]),
            };
        }
        let got = size(&term, &Settings::exact()).unwrap();
        assert_eq!(got.visited, 1_000_001);
        // Two-word tuples, one cell, six-word funs: 10 words per three levels.
        assert_eq!(
            got.words,
            2.0 * 333_334.0 + 2.0 * 333_333.0 + 6.0 * 333_333.0
        );
        // Drop iteratively: the model itself is recursive.
        let mut stack = vec![term];
        while let Some(t) = stack.pop() {
            match t {
                M::Tuple(items) | M::Fun(items) | M::List(items, None) => stack.extend(items),
                _ => {}
            }
        }
    }
}
