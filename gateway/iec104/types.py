"""IEC 60870-5-104 type identifiers and the rules about them both sides of a link need.

Which types carry a time tag, which untagged twin answers an interrogation, which are
counters: the outstation, the dispatch test and a future 104 master driver read them here.
"""

from typing import Literal

IOA_MAX = 0xFFFFFF
MonitorType = Literal["M_SP_NA_1", "M_SP_TB_1", "M_DP_NA_1", "M_DP_TB_1", "M_ME_NA_1", "M_ME_TD_1",
                      "M_ME_NB_1", "M_ME_TE_1", "M_ME_NC_1", "M_ME_TF_1", "M_IT_NA_1", "M_IT_TB_1"]
TIME_TAGGED = frozenset({"M_SP_TB_1", "M_DP_TB_1", "M_ME_TD_1", "M_ME_TE_1", "M_ME_TF_1", "M_IT_TB_1"})
# IEC 60870-5-101 allows only untagged types at COT 20 (station interrogation) and COT 37 (counter
# interrogation): a point configured with a time-tagged type answers those with its untagged twin.
UNTAGGED = {"M_SP_TB_1": "M_SP_NA_1", "M_DP_TB_1": "M_DP_NA_1", "M_ME_TD_1": "M_ME_NA_1",
            "M_ME_TE_1": "M_ME_NB_1", "M_ME_TF_1": "M_ME_NC_1", "M_IT_TB_1": "M_IT_NA_1"}
COUNTERS = frozenset({"M_IT_NA_1", "M_IT_TB_1"})
CommandType = Literal["C_SC_NA_1", "C_SC_TA_1", "C_DC_NA_1", "C_DC_TA_1", "C_SE_NA_1", "C_SE_TA_1",
                      "C_SE_NB_1", "C_SE_TB_1", "C_SE_NC_1", "C_SE_TC_1"]
