// Fit a signed value into W_OUT bits (DESIGN.md): WRAP = 1 keeps the low W_OUT bits (two's
// complement, AP_WRAP), WRAP = 0 saturates to [min, max] (AP_SAT). SIGNED_OUT = 0: the target
// is unsigned, [0, 2**W_OUT - 1]. ovf = 1 when x is outside the target range (whatever WRAP).
module fxp_saturate #(
    parameter integer W_IN       = 17,
    parameter integer W_OUT      = 16,
    parameter integer SIGNED_OUT = 1,
    parameter integer WRAP       = 0
) (
    input  wire signed [W_IN-1:0] x,
    output wire [W_OUT-1:0]       y,
    output wire                   ovf
);
    localparam integer WX = (W_IN > W_OUT + 1) ? W_IN : W_OUT + 1;
    wire signed [WX-1:0] xe;
    fxp_resize #(.W_IN(W_IN), .W_OUT(WX)) u_ext (.x(x), .y(xe));
    wire neg = xe[WX-1];
    wire [W_OUT-1:0] one = 1;
    wire [W_OUT-1:0] top = one << (W_OUT - 1);
    wire [W_OUT-1:0] lo_rail = (SIGNED_OUT != 0) ? top : {W_OUT{1'b0}};   // raw_min
    wire [W_OUT-1:0] hi_rail = (SIGNED_OUT != 0) ? ~top : {W_OUT{1'b1}};  // raw_max
    generate
        if (SIGNED_OUT != 0) begin : g_signed  // in range iff bits WX-1 .. W_OUT-1 all equal the sign
            wire [WX-W_OUT:0] head = xe[WX-1:W_OUT-1];
            assign ovf = ~((&head) | ~(|head));
        end else begin : g_unsigned       // in range iff bits WX-1 .. W_OUT are all zero
            wire [WX-W_OUT-1:0] head = xe[WX-1:W_OUT];
            assign ovf = |head;
        end
    endgenerate
    assign y = (WRAP != 0 || !ovf) ? xe[W_OUT-1:0] : (neg ? lo_rail : hi_rail);
endmodule
