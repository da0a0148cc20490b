#!/usr/bin/env python3
"""vidur_run.py - run PyPI vidur (0.0.26) with local Vidur profiles instead
of the HuggingFace datasets it downloads (unreachable here). Profiles come
from $LKV_VIDUR_PROFILES (default ../shared/data/vidur/data/profiling); only
the A100 models whose attention shape we have are mapped. Used by
tools/vidur_compare.sh; arguments are vidur.main's.
"""
import os
import vidur.execution_time_predictor.sklearn_execution_time_predictor as sk

D = os.environ.get('LKV_VIDUR_PROFILES',
                   os.path.join(os.path.dirname(__file__), '..', '..', 'shared',
                                'data', 'vidur', 'data', 'profiling'))
MODEL_DIR = {
    'codellama/CodeLlama-34b-Instruct-hf': 'compute/a100/codellama/CodeLlama-34b-Instruct-hf',
    'meta-llama/Llama-2-70b-hf': 'compute/a100/meta-llama/Llama-2-70b-hf',
}


def _files(self):
    m = self._replica_config.model_name
    return (f"{D}/{MODEL_DIR[m]}/mlp.csv", f"{D}/a100/attention.csv",
            f"{D}/network/a100_dgx/all_reduce.csv",
            f"{D}/network/a100_dgx/send_recv.csv")


sk.SklearnExecutionTimePredictor._get_input_files = _files

if __name__ == '__main__':
    from vidur.main import main
    main()
