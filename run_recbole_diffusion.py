"""Train and evaluate a recommender, like RecBole's run_recbole.py.

    python run_recbole_diffusion.py --model=DiffuRec --dataset=amazon-beauty --data_path=../shared/data
    python run_recbole_diffusion.py --model=SASRec --dataset=ml-100k --epochs=5
    python run_recbole_diffusion.py            # a short DiffuRec demo on the ml-100k copy inside recbole
"""

import sys

from recbole_diffusion.runner import main

if __name__ == "__main__":
    sys.exit(main())
