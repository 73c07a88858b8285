"""linprobe-theory: the theory of "Fine-Tuning can Distort Pretrained Features and Underperform
Out-of-Distribution" (Kumar et al., ICLR 2022) as runnable, checkable JAX code."""

from .construction import ProblemSpec as ProblemSpec
from .construction import make_problem as make_problem
from .covariance import OODCovariance as OODCovariance
from .diagnostics import balancedness_drift as balancedness_drift
from .diagnostics import feature_distortion as feature_distortion
from .diagnostics import orthogonal_drift as orthogonal_drift
from .discrete import DiscreteTrajectory as DiscreteTrajectory
from .discrete import train_discrete as train_discrete
from .dynamics import Trajectory as Trajectory
from .dynamics import fine_tune as fine_tune
from .dynamics import linear_probe as linear_probe
from .dynamics import lp_ft as lp_ft
from .flows import Flow as Flow
from .flows import LearningRates as LearningRates
from .flows import make_flow as make_flow
from .heads import head_with_alignment as head_with_alignment
from .heads import random_head as random_head
from .heads import zero_head as zero_head
from .integrate import FlowSolution as FlowSolution
from .integrate import SolveError as SolveError
from .integrate import SolveStatus as SolveStatus
from .invariant_bound import InvariantBound as InvariantBound
from .invariant_bound import invariant_ood_lower_bound as invariant_ood_lower_bound
from .losses import id_loss as id_loss
from .losses import ood_loss as ood_loss
from .losses import train_loss as train_loss
from .models import ACTIVATIONS as ACTIVATIONS
from .models import TwoLayer as TwoLayer
from .objectives import L2SP as L2SP
from .objectives import LogisticLoss as LogisticLoss
from .objectives import Loss as Loss
from .objectives import Regularizer as Regularizer
from .objectives import SquaredLoss as SquaredLoss
from .objectives import WeightDecay as WeightDecay
from .ood import gaussian_ood_risk as gaussian_ood_risk
from .ood import ood_inputs as ood_inputs
from .ood import ood_logistic_loss as ood_logistic_loss
from .ood import ood_zero_one_error as ood_zero_one_error
from .ood import sampled_ood_risk as sampled_ood_risk
from .options import SolveOptions as SolveOptions
from .probing import linear_probe_solution as linear_probe_solution
from .probing import lp_limit as lp_limit
from .problem import Problem as Problem
from .reduced import ReducedProblem as ReducedProblem
from .reduced_flow import fine_tune_reduced as fine_tune_reduced
from .solver import FusedTsit5 as FusedTsit5
from .theory import aligned_v_star as aligned_v_star
from .theory import cos_theta_max as cos_theta_max
from .theory import coverage_cosine as coverage_cosine
from .theory import feature_error as feature_error
from .theory import ft_ood_lower_bound as ft_ood_lower_bound
from .theory import head_alignment_error as head_alignment_error
from .theory import lp_ood_upper_bound as lp_ood_upper_bound

__version__ = "0.1.0"
