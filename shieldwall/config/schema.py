"""The experiment configuration: one dataclass per FedML section.

The YAML layout is FedML's (``common_args``, ``data_args``, ``model_args``, ``train_args``, …) so
that FedML users' files load unchanged; shieldwall's own additions (runtime, aggregator
parameters, pre-aggregators, checkpointing…) live in the same sections. Every field is documented
by the string under it. ``choices`` in a field's metadata are checked case-insensitively by
:mod:`shieldwall.config.loader`; values naming registry entries (models, data sets, aggregators,
attacks) are checked against the registries when the run is built.

Keys that only matter to FedML's deployment machinery are listed in :data:`IGNORED_KEYS`: they are
accepted and reported once in the log.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CommonArgs",
    "EnvironmentArgs",
    "DataArgs",
    "ModelArgs",
    "TrainArgs",
    "ValidationArgs",
    "DeviceArgs",
    "CommArgs",
    "TrackingArgs",
    "AttackArgs",
    "DefenseArgs",
    "ClientSiloArgs",
    "BTARDArgs",
    "RedundancyArgs",
    "TextArgs",
    "ExperimentConfig",
    "SECTIONS",
    "IGNORED_KEYS",
    "OPEN_SECTIONS",
]


def choice(default: Any, *choices: str) -> Any:
    """A field whose value must be one of ``choices`` (compared case-insensitively)."""
    return field(default=default, metadata={"choices": choices})


@dataclass(kw_only=True)
class CommonArgs:
    training_type: str = choice("simulation", "simulation", "cross_silo", "cross_device")
    """FedML's deployment type. shieldwall picks the runtime from ``comm_args.runtime`` and the
    launcher; this value is recorded for reference."""
    random_seed: int = 0
    """Seed of every random choice: partitions, client sampling, batches, attacks, init."""
    scenario: str = choice("horizontal", "horizontal", "hierarchical")
    """``hierarchical``: silos that train with DDP inside (see ``client_silo_args``)."""
    fedml_semantics: str = choice("auto", "auto", "on", "off")
    """Follow FedML's behaviour where it differs from shieldwall's defaults (Byzantine clients
    redrawn every round, ``model: lr`` with FedML's sigmoid, tests on FedML's rounds, per-round
    data-part selection in cross-silo runs; see ``docs/fedml_compat.md``). ``auto``: on when the
    config sets any key only FedML uses (``training_type``, ``backend``, ``worker_num``, …)."""


@dataclass(kw_only=True)
class EnvironmentArgs:
    """FedML's bootstrap script settings; nothing here is used by shieldwall."""


@dataclass(kw_only=True)
class DataArgs:
    dataset: str = "digits"
    """Data set name (``digits`` is embedded; ``mnist``, ``fashion_mnist``, ``cifar10``,
    ``cifar100``, ``svhn`` read local files)."""
    data_cache_dir: str | None = None
    """Folder holding the data set's files, or a parent holding them under the data set's name.
    Nothing is ever downloaded."""
    partition_method: str = choice(
        "iid", "iid", "homo", "homogeneous", "hetero", "dirichlet", "non-iid", "noniid",
        "document", "by_document", "documents", "by_group", "sorted", "label_sorted", "bucketing",
    )
    """How training data is split over clients: ``iid``/``homo``, ``hetero``/``dirichlet``,
    ``document`` (text: whole documents per client; other data: whole classes per client), or
    ``sorted`` (the bucketing paper's label-sorted shards; Byzantine clients get i.i.d. data)."""
    partition_alpha: float = 0.5
    """Dirichlet concentration for ``hetero``: smaller is more skewed."""
    partition_min_size: int = 10
    """Dirichlet partitions are redrawn until every client holds at least this many samples."""


@dataclass(kw_only=True)
class ModelArgs:
    model: str = "lr"
    """Model name: ``lr``, ``mlp``, ``cnn``, ``lenet``, ``resnet18``… (case-insensitive)."""


@dataclass(kw_only=True)
class TrainArgs:
    federated_optimizer: str = choice(
        "FedAvg", "FedAvg", "PS-SGD", "PSSGD", "SGD", "BTARD", "HierarchicalFedAvg",
        "FedAvg_seq", "FedOpt", "FedAdam", "FedYogi", "FedAdagrad", "FedAvgM", "FedProx",
        "HierarchicalFL",
    )
    """Algorithm: ``FedAvg`` (clients train locally, the server aggregates model updates) or
    ``PS-SGD`` (synchronous SGD: the server aggregates one gradient per worker each step)."""
    client_id_list: list[int] | None = None
    """FedML's ids of the clients this deployment runs (``"[1, 2]"`` strings are parsed)."""
    client_num_in_total: int = 10
    """Number of clients (workers); the training set is partitioned over them."""
    client_num_per_round: int | None = None
    """Clients sampled each round (FedAvg); ``None`` means all of them."""
    comm_round: int = 10
    """Rounds (FedAvg) or steps (PS-SGD) to run."""
    epochs: int = 1
    """Local epochs per round (FedAvg)."""
    batch_size: int = 10
    """Local batch size; in PS-SGD each worker's batch per step."""
    client_optimizer: str = choice("sgd", "sgd", "adam", "adamw", "lamb")
    """Optimizer of local training (FedAvg) or of the server (PS-SGD, BTARD): ``sgd``, ``adam``,
    ``adamw`` (decoupled weight decay) or ``lamb`` (You et al. 2020, the BTARD ALBERT recipe)."""
    learning_rate: float = 0.03
    """Learning rate of ``client_optimizer``."""
    weight_decay: float = 0.0
    """L2 weight decay of ``client_optimizer``."""
    momentum: float = 0.0
    """SGD momentum (local in FedAvg, at the server in PS-SGD)."""
    worker_momentum: float = 0.0
    """PS-SGD: each honest worker sends its momentum ``m = β·m + g`` (β = this value, first
    ``m = g``) instead of its gradient, as in the bucketing paper (Karimireddy et al. 2022);
    Byzantine workers' own rows stay raw gradients, as in its code. 0: off."""
    shared_dropout_rounds: int = 0
    """0 (default): each client draws its own dropout masks. k >= 1: every client of a round
    draws the same masks, from an RNG seeded by (seed, round // k), so the masks change every k
    rounds; the rest of the run's randomness is untouched. This reproduces the bucketing paper's
    simulator, which restores the RNG after each worker: on a CPU only the evaluation after each
    30-step epoch moves it on (k = 30); on the GPU its published logs ran on, nothing moves the
    CUDA generator and the masks are never redrawn (k >= comm_round)."""
    server_lr: float = 1.0
    """FedAvg: the global model moves by ``server_lr`` times the aggregated update."""
    server_optimizer: str = "sgd"
    """FedOpt (Reddi et al. 2021): the server optimizer applied to the pseudo-gradient
    ``-AGG(Δ)``: ``sgd``, ``adam``, ``yogi`` or ``adagrad`` (FedML's names; read by FedOpt)."""
    server_momentum: float = 0.0
    """FedOpt with ``server_optimizer: sgd``: the server's momentum (FedAvgM)."""
    fedprox_mu: float = 0.0
    """FedProx (Li et al. 2020): weight μ of the proximal term (μ/2)‖w − w_t‖² in local training."""
    checkpoint_frequency: int = 1
    """Write a checkpoint every this many rounds (0: only at the end)."""
    warmup_steps: int = 0
    """Learning-rate warm-up: the rate grows linearly from 0 over this many optimizer steps
    (PS-SGD/BTARD: steps; FedAvg: rounds)."""
    lr_schedule: str = choice("constant", "constant", "linear")
    """After warm-up: ``constant``, or ``linear`` decay to 0 at the last round (BERT/ALBERT)."""
    max_grad_norm: float | None = None
    """Clip the gradient the optimizer steps with to this L2 norm (PS-SGD/BTARD: the aggregate;
    FedAvg: each local step's gradient); ``None``: no clipping."""
    target_batch_size: int | None = None
    """PS-SGD/BTARD: each worker accumulates gradients of ``batch_size`` micro-batches until it has
    seen this many samples per step (``None``: one micro-batch)."""
    lamb_clamp_value: float = 10.0
    """LAMB's bound c on the weight norm in the trust ratio min(‖x‖, c)/‖u‖ (paper: 10; BTARD's
    ALBERT recipe: 10000)."""


@dataclass(kw_only=True)
class ValidationArgs:
    frequency_of_the_test: int = 1
    """Evaluate on the test set every this many rounds (and always after the last)."""


@dataclass(kw_only=True)
class DeviceArgs:
    worker_num: int | None = None
    """FedML's number of worker processes; informational in the simulator."""
    using_gpu: bool = False
    """Train on CUDA (and use NCCL in multi-process runs) when available."""
    device: str | None = None
    """Explicit torch device (``cpu``, ``cuda:0``); overrides ``using_gpu``."""
    num_threads: int | None = None
    """CPU threads for torch's kernels (``None``: torch's default). Small models run fastest
    with 1 thread, and several processes on one machine should share the cores."""
    batched: str = choice("auto", "auto", "on", "off")
    """Simulator: compute all of a round's clients in one batched (``torch.func.vmap``)
    computation. ``auto``: whenever that equals the per-client loop (no batch-norm, dropout or
    local Adam), else the loop, logged once; ``on``: batched or a config error saying why not;
    ``off``: always the loop. See ``docs/simulator.md``."""
    max_clients_per_chunk: int | None = None
    """Batched simulator: at most this many clients per batched computation (memory bound);
    ``None``: chosen from a memory budget (2 GiB on CPU, a quarter of free GPU memory)."""


@dataclass(kw_only=True)
class CommArgs:
    backend: str = choice(
        "sim", "sim", "simulation", "local", "MPI", "gloo", "nccl", "torch", "GRPC", "MQTT_S3",
        "TRPC", "MQTT", "sp", "MQTT_S3_MNN", "MQTT_WEB3", "MQTT_THETASTORE",
    )
    """FedML's backend name; mapped to a shieldwall runtime when ``runtime`` is ``auto``."""
    runtime: str = choice("auto", "auto", "simulator", "torch_distributed", "grpc")
    """``auto``: torch.distributed when launched by torchrun/mpirun, else the simulator."""
    round_timeout: float = 300.0
    """Seconds the server waits for a round's updates before treating the absent as absent."""
    max_update_norm: float = 1e12
    """Received updates with a larger L2 norm are treated as Byzantine input."""
    on_worker_loss: str = choice("continue", "continue", "stop")
    """torch.distributed runtime: when a worker rank misses ``round_timeout`` or its connection
    breaks, ``continue`` without it (its clients rejected as ``timeout`` from then on) or
    ``stop`` the run with an error (resume from the last checkpoint). See ``docs/runtimes.md``."""
    server_address: str = "127.0.0.1"
    """Networked mode (``runtime: grpc``, ``shieldwall server``/``client``): the address the
    server listens on and clients connect to. See ``docs/networked.md``."""
    server_port: int = 8890
    """Networked mode: the server's TCP port."""
    auth_tokens: dict[int, str] = field(default_factory=dict)
    """Networked mode: client id → secret token; the server refuses a client whose token differs.
    Merged with ``token_file``; without either, clients are not checked by token."""
    token_file: str | None = None
    """Networked mode: YAML file of ``client_id: token`` lines (keeps secrets out of the config)."""
    tls_ca: str | None = None
    """Networked mode: CA certificate (PEM). Clients verify the server with it; the server
    requires client certificates signed by it whose common name is ``client-K`` (mutual TLS)."""
    tls_cert: str | None = None
    """Networked mode: this process's certificate (PEM); ``{name}`` in the path becomes
    ``server`` or ``client-K``. TLS is on whenever certificates are configured."""
    tls_key: str | None = None
    """Networked mode: the private key of ``tls_cert`` (``{name}`` as there)."""
    quorum: int | None = None
    """Networked mode: answers that suffice to close a round once ``quorum_timeout`` seconds
    have passed (``None``: every client of the round); ``round_timeout`` closes it regardless."""
    quorum_timeout: float = 10.0
    """Networked mode: seconds after a round's start before a quorum may close it."""
    max_message_mb: float = 4.0
    """Networked mode: largest gRPC message either side accepts; vectors travel in chunks below
    it, and a larger message is refused (the sender's row is treated as Byzantine)."""
    join_timeout: float = 60.0
    """Networked mode: before its first round (fresh or resumed) the server waits up to this
    long for every client of ``train_args.client_id_list`` to connect."""
    reconnect_timeout: float = 600.0
    """Networked mode: a client retries (with back-off) this long without reaching the server
    before it gives up."""
    partition_parts: int | None = None
    """Networked mode: the parts the training data are split into, client ``K`` holding part
    ``K - 1`` (``None``: ``train_args.client_num_in_total``). ``shieldwall server`` records the
    clients' ``client_num_in_total`` here before it counts only the listed clients, so that it
    knows each client's shard size (the most a client may claim as its sample count)."""


@dataclass(kw_only=True)
class TrackingArgs:
    log_file_dir: str = "./runs"
    """Parent folder of run directories."""
    run_name: str | None = None
    """Name of this run's directory under ``log_file_dir`` (default: config name + time)."""
    enable_tensorboard: bool = True
    """Write TensorBoard event files into the run directory."""
    progress_bar: bool | None = None
    """Show a progress bar; ``None``: only on an interactive terminal outside CI."""
    log_level: str = choice("info", "debug", "info", "warning", "error")
    """Logging level; ``debug`` also prints each client's class histogram."""
    enable_wandb: bool = False
    """Accepted for FedML compatibility; shieldwall logs locally only."""


@dataclass(kw_only=True)
class AttackArgs:
    enable_attack: bool = False
    """Turn the attack on."""
    attack_type: str | None = None
    """FedML's ``byzantine`` (then ``attack_mode`` names the attack) or any attack name."""
    attack_mode: str | None = None
    """For ``attack_type: byzantine``: FedML's ``zero``, ``random``, ``flip``, or any attack."""
    byzantine_client_num: int = 0
    """Number of Byzantine clients."""
    attack_start: int = 0
    """First round in which Byzantine clients attack."""
    attack_end: int | None = None
    """Last round (inclusive) of the attack; ``None``: until the end."""
    byzantine_redraw: bool = False
    """Redraw which clients are Byzantine every round (else one seeded draw)."""
    knowledge: str = choice("omniscient", "omniscient", "own", "honest")
    """What update attacks see: ``omniscient``: their own rows first, then every honest row of
    the round; ``own``: only their own rows; ``honest``: only the honest workers' rows, not their
    own (the bucketing paper's code: its IPM, ALIE and mimic read the good workers' momenta)."""
    params: dict[str, Any] = field(default_factory=dict)
    """Parameters of the chosen attack (any other key of this section lands here and is
    checked against the attack's signature)."""


@dataclass(kw_only=True)
class DefenseArgs:
    enable_defense: bool = False
    """Turn the robust defense on (off: plain weighted mean)."""
    defense_type: str | None = None
    """Aggregator name (``krum``, ``median``, ``trimmed_mean``, …)."""
    byzantine_client_num: int | None = None
    """f the defense tolerates; default: ``attack_args.byzantine_client_num``."""
    preaggregators: list[Any] = field(default_factory=list)
    """Pre-aggregation steps before the aggregator, in order: names or ``{name: {params}}``."""
    params: dict[str, Any] = field(default_factory=dict)
    """Parameters of the aggregator (any other key of this section lands here and is checked
    against the aggregator's signature)."""


@dataclass(kw_only=True)
class ClientSiloArgs:
    n_node_in_silo: int = 1
    """Machines per silo (hierarchical cross-silo)."""
    n_proc_per_node: int = 1
    """DDP trainer processes per machine in a silo."""
    node_rank_in_silo: int = 0
    """This machine's rank within its silo."""
    pg_master_address: str = "127.0.0.1"
    """Address of the silo's DDP process-group master."""
    pg_master_port: int = 29500
    """Port of the silo's DDP process-group master."""


@dataclass(kw_only=True)
class BTARDArgs:
    """BTARD-SGD (``train_args.federated_optimizer: BTARD``; Gorbunov et al., ICML 2022): peers
    aggregate gradient parts with CenteredClip, verify each other and ban the Byzantine. Attacks
    come from ``attack_args`` (see ``docs/btard.md``)."""

    tau: float = 1.0
    """CenteredClip radius for every part (an absolute L2 length; a few times the honest parts'
    spread)."""
    cc_iterations: int = 5
    """Steps of the registered fixed-step CenteredClip before the solver refines its result to the
    fixed point the other peers check."""
    cc_rel_tol: float = 1e-4
    """Fixed-point tolerance: a part's residual must be at most n (tol·tau + 1.2e-7 ‖result‖)."""
    check_sigmas: float = 8.0
    """A part's checksum sum may reach this many times the residual bound (an honest aggregator
    fails with probability ``P(|N(0,1)| > check_sigmas)``)."""
    validators: int = 1
    """Validators drawn per step by the shared random generator; each recomputes one random
    peer's gradient and checksums."""
    check_mode: str = choice("real", "real", "simulated")
    """``real``: validators recompute gradients; ``simulated``: the paper's fast study, where each
    attacking peer is banned with probability ``check_proba`` per step instead."""
    check_proba: float | None = None
    """Ban probability per step in ``simulated`` mode; ``None``: (n - b)/n · 1/(n - 1) for one
    validator (1 - (1 - that)^validators)."""
    silence_limit: int = 3
    """A peer silent in this many steps is banned."""
    grad_rtol: float = 1e-4
    """A recomputed gradient may differ from the committed one by this relative L2 error."""
    signature: str = choice("auto", "auto", "ed25519", "hmac")
    """Message signatures: ``ed25519`` (needs the ``cryptography`` package), ``hmac`` (fast,
    in-process simulation only: refused under torch.distributed), ``auto`` (ed25519 when
    installed). The hivemind swarm ignores it and signs with each peer's libp2p identity key."""
    measure_bytes: bool = False
    """Simulator: serialise every message to count exact bytes (slower)."""
    save_steps: list[int] = field(default_factory=list)
    """Steps at whose start every peer keeps its state as ``RUN_DIR/state_step_<t>.pt``
    (parameters, optimizer state, step, ledger); the BTARD seed keeps 450, 950, 2950 and 4950.
    Any such file can start a new run through ``initial_state``."""
    initial_state: str | None = None
    """Start from this file instead of the seeded initialisation (the seed's
    ``initial_state_path``): a ``state_step_<t>.pt``, a run's ``btard_checkpoint.pt`` or
    ``final_params.pt``, or a model ``state_dict``. Parameters, plus the optimizer state, step and
    bans where the file has them (a closed run keeps its own ledger). Every peer that starts the
    run reads it; swarm peers joining later download the agreed state instead."""


@dataclass(kw_only=True)
class RedundancyArgs:
    """Redundancy defenses in PS-SGD (DETOX, Rajput et al. 2019; ByzShield, Konstantinidis &
    Ramamoorthy, MLSys 2021): every file of the batch is computed by ``group_size`` workers, the
    server votes per file and aggregates the voted file gradients. K is
    ``train_args.client_num_in_total``. ByzShield's dashed flags map to these underscore keys
    (``group-size`` → ``group_size``, ``worker-fail`` → ``worker_fail``, ``err-mode`` →
    ``err_mode``, ``rama-m`` → ``rama_m``, ``lis-simulation`` → ``lis_simulation``); see
    ``docs/redundancy.md``."""

    enable: bool = False
    """Train with the redundancy driver (:mod:`shieldwall.redundancy.training`)."""
    approach: str = "mols"
    """ByzShield approach (``baseline``, ``mols``, ``rama_one``, ``rama_two``, ``draco-lite``,
    ``draco_lite_attack``, ``maj_vote``) or a placement name (``detox``)."""
    group_size: int = 3
    """r: workers per file (forced to 1 for ``baseline``)."""
    worker_fail: int = 0
    """q: number of adversarial workers."""
    rama_m: int | None = None
    """``rama_two``'s parameter m; ``None`` (or ByzShield's ``-1``): m = r."""
    err_mode: str = "rev_grad"
    """The adversaries' attack: ByzShield's ``rev_grad``/``constant`` or any attack name."""
    attack_params: dict[str, Any] = field(default_factory=dict)
    """Parameters of the attack (e.g. ``{z: 1.0}`` for ALIE, ``{scale: 100}`` for rev_grad)."""
    lis_simulation: bool = False
    """ByzShield's ``lis-simulation simulate``: the attack is ALIE (replaces ``err_mode``)."""
    mode: str = "coord-median"
    """Aggregator of the voted files: ``coord-median``, ``bulyan``, ``multi-krum`` or any
    aggregator name (``maj_vote`` always uses the mean)."""
    aggregator_f: int | None = None
    """f given to the aggregator and attack; ``None``: c_max(q) of the placement."""
    adversary_choice: str = choice("worst_case", "worst_case", "random")
    """``worst_case``: the fixed set attaining c_max(q) (for DETOX ByzShield's attack on DETOX);
    ``random``: a fresh seeded set of q workers every step."""
    vote_rtol: float = 1e-5
    """Relative tolerance of replica agreement in the vote."""
    vote_atol: float = 1e-8
    """Absolute tolerance of replica agreement in the vote."""
    files_batch_size: int | None = None
    """Samples per file; ``None``: ``train_args.batch_size``."""
    detox_attack: str = choice("worst", "worst", "benign", "whole_group")
    """ByzShield's ``detox-attack`` (with ``draco_lite_attack``): ``worst`` = r′ adversaries per
    group, group after group; ``benign`` = one per group in turn; ``whole_group`` = workers
    0 … q − 1 (whole groups first)."""
    epochs: int | None = None
    """ByzShield's ``epochs``: passes over the training set, each a fresh seeded permutation cut
    into steps of F·b samples (the last partial step dropped); the run stops at
    min(``train_args.comm_round``, epochs · steps per epoch). ``None``: not counted (every step
    draws a fresh random batch)."""
    gamma: float = 1.0
    """ByzShield's learning-rate decay: at 1-based step i the rate is lr·gamma^⌊i/lr_step⌋."""
    lr_step: int | None = None
    """ByzShield's ``lr-step``: decay period in steps; ``None``: no decay."""
    eval_freq: int | None = None
    """ByzShield's ``eval-freq``: write a model backup ``model_step_<i>`` every this many steps
    (1-based i) into ``train_dir``, for ``shieldwall evaluate``; ``None``: no backups."""
    train_dir: str | None = None
    """ByzShield's ``train-dir``: folder of the backups; ``None``: ``<run_dir>/backups``."""


@dataclass(kw_only=True)
class TextArgs:
    """Text data sets and transformer models (``dataset: pydoc_topics``/``wikitext2``/
    ``wikitext103``, ``model: albert``); see ``docs/language_model.md``."""

    tokenizer: str = choice("wordpiece", "wordpiece", "bpe", "byte")
    """``wordpiece`` (BERT-style, lower-cased) or ``bpe`` (byte-level BPE), trained locally with
    the ``tokenizers`` package on the training split and cached; ``byte``: 256 byte ids."""
    vocab_size: int = 2000
    """Vocabulary size the tokenizer is trained to (special tokens included)."""
    tokenizer_cache_dir: str | None = None
    """Where trained tokenizers are cached (``None``: ``$SHIELDWALL_TOKENIZER_CACHE``, else
    ``~/.cache/shieldwall/tokenizers``); processes of one run should share it."""
    max_seq_length: int = 64
    """Tokens per training block, ``[CLS]`` and ``[SEP]`` included."""
    mlm_probability: float = 0.15
    """Share of tokens selected for the masked-LM loss (of them 80% ``[MASK]``, 10% random, 10%
    kept, as BERT/ALBERT)."""
    dupe_factor: int = 5
    """Copies of each training block, each masked differently (BERT's static masking)."""
    max_documents: int | None = None
    """Read at most this many documents of each split (quick looks at WikiText-103)."""
    embedding_size: int | None = None
    """ALBERT's factorised embedding size E (``None``: the named shape's)."""
    hidden_size: int | None = None
    """ALBERT's hidden size H (``None``: the named shape's)."""
    num_hidden_layers: int | None = None
    """ALBERT's number of (shared) layers (``None``: the named shape's)."""
    num_attention_heads: int | None = None
    """ALBERT's attention heads (``None``: the named shape's)."""
    intermediate_size: int | None = None
    """ALBERT's feed-forward size (``None``: the named shape's)."""
    max_position_embeddings: int | None = None
    """Positions the model has (``None``: the named shape's, at least ``max_seq_length``)."""


@dataclass(kw_only=True)
class ExperimentConfig:
    """A whole experiment: one attribute per YAML section."""

    common_args: CommonArgs = field(default_factory=CommonArgs)
    environment_args: EnvironmentArgs = field(default_factory=EnvironmentArgs)
    data_args: DataArgs = field(default_factory=DataArgs)
    model_args: ModelArgs = field(default_factory=ModelArgs)
    train_args: TrainArgs = field(default_factory=TrainArgs)
    validation_args: ValidationArgs = field(default_factory=ValidationArgs)
    device_args: DeviceArgs = field(default_factory=DeviceArgs)
    comm_args: CommArgs = field(default_factory=CommArgs)
    tracking_args: TrackingArgs = field(default_factory=TrackingArgs)
    attack_args: AttackArgs = field(default_factory=AttackArgs)
    defense_args: DefenseArgs = field(default_factory=DefenseArgs)
    client_silo_args: ClientSiloArgs = field(default_factory=ClientSiloArgs)
    btard_args: BTARDArgs = field(default_factory=BTARDArgs)
    redundancy_args: RedundancyArgs = field(default_factory=RedundancyArgs)
    text_args: TextArgs = field(default_factory=TextArgs)
    sources: dict[str, str] = field(default_factory=dict)
    """Where each set value came from (``file``, ``--set``), keyed ``section.key``."""
    name: str = "experiment"
    """The config's name (its file's stem)."""


SECTIONS: dict[str, type] = {
    "common_args": CommonArgs,
    "environment_args": EnvironmentArgs,
    "data_args": DataArgs,
    "model_args": ModelArgs,
    "train_args": TrainArgs,
    "validation_args": ValidationArgs,
    "device_args": DeviceArgs,
    "comm_args": CommArgs,
    "tracking_args": TrackingArgs,
    "attack_args": AttackArgs,
    "defense_args": DefenseArgs,
    "client_silo_args": ClientSiloArgs,
    "btard_args": BTARDArgs,
    "redundancy_args": RedundancyArgs,
    "text_args": TextArgs,
}

# Sections whose unknown keys are parameters of the chosen registry entry.
OPEN_SECTIONS = frozenset({"attack_args", "defense_args"})

# Keys that matter only to FedML's deployment machinery (MLOps, MQTT/S3, GPU mapping, W&B…).
IGNORED_KEYS: dict[str, frozenset[str]] = {
    "common_args": frozenset({"using_mlops", "config_version"}),
    "environment_args": frozenset({"bootstrap"}),
    "model_args": frozenset({"model_file_cache_folder", "global_model_file_path"}),
    "device_args": frozenset({"gpu_mapping_file", "gpu_mapping_key", "gpu_id"}),
    "comm_args": frozenset({"mqtt_config_path", "s3_config_path", "grpc_ipconfig_path",
                            "trpc_master_config_path"}),
    "tracking_args": frozenset({"wandb_project", "wandb_name", "wandb_key", "wandb_entity",
                                "enable_tracking", "log_server_url", "wandb_only_server"}),
    "train_args": frozenset(),
    "validation_args": frozenset(),
    "data_args": frozenset(),
    "attack_args": frozenset(),
    "defense_args": frozenset(),
    "client_silo_args": frozenset(),
    "btard_args": frozenset(),
    "redundancy_args": frozenset(),
    "text_args": frozenset(),
}
