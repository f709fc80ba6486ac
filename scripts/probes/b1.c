/* batch-1 condensed GEMV probes. usage: ./b1 in out sparsity [ncalls] */
#include "../../suite/bench/probes/probe_kernels.h"
static volatile int sink;
int main(int argc,char**argv){
  int in=atoi(argv[1]),out=atoi(argv[2]);double sp=atof(argv[3]);int nc=argc>4?atoi(argv[4]):2000;int reps=7;
  int k=(int)lround((1-sp)*in);double tmin,tmed;
  int*idx=malloc((long)out*k*sizeof(int));make_mask(in,out,k,idx);
  float*val=malloc((long)out*k*4),*x=aligned_alloc(64,in*4),*bias=aligned_alloc(64,out*4),*y=aligned_alloc(64,out*4);double*yr=malloc(out*8);
  for(long i=0;i<(long)out*k;i++)val[i]=frnd();for(int i=0;i<in;i++)x[i]=frnd();for(int i=0;i<out;i++)bias[i]=frnd();
  for(int j=0;j<out;j++){double s=bias[j];for(int t=0;t<k;t++)s+=(double)val[(long)j*k+t]*x[idx[(long)j*k+t]];yr[j]=s;}
  uint16_t*ix16=malloc((long)out*k*2);for(long i=0;i<(long)out*k;i++)ix16[i]=idx[i];
  float*Wm=aligned_alloc(64,(long)in*out*4);memset(Wm,0,(long)in*out*4);for(int j=0;j<out;j++)for(int t=0;t<k;t++)Wm[(long)j*in+idx[(long)j*k+t]]=val[(long)j*k+t];
  printf("== %d->%d sparsity %.2f k=%d nnz=%ld threads=2\n",in,out,sp,k,(long)out*k);loadavg("before");
#define CHK(name) do{double e=0;for(int j=0;j<out;j++){double d=fabs(y[j]-yr[j]);if(d>e)e=d;} if(e>1e-3)printf("  !! %s maxerr %g\n",name,e);}while(0)
  TIME("empty omp parallel region",nc*5,reps,{_Pragma("omp parallel num_threads(2)") {sink=omp_get_thread_num();}});
  TIME("serial scalar rows (1 thread, no omp)",nc/4+1,reps,rows(0,out,k,val,ix16,x,bias,y)); CHK("serial");
  TIME("scalar rows 4acc, int16 idx (2 thr)",nc,reps,k_scalar(out,k,val,ix16,x,bias,y)); CHK("scalar");
  printf("   scalar packed bytes %.2f MB\n",(double)out*k*6/1e6);
  TIME("dense AVX-512 GEMV (2 thr)",nc/4+1,reps,k_dense(in,out,Wm,x,bias,y)); CHK("dense");
  printf("   dense bytes %.2f MB -> %.1f GB/s at min\n",(double)in*out*4/1e6,(double)in*out*4/1e3/tmin);
  struct {const char*n;int W,B,al,T;void(*f)(const Pk*,const float*,const float*,float*);} V[]={
    {"zmm vpermt2ps B32 aligned",16,32,1,1,k_z32},{"zmm vpermps B16 aligned",16,16,1,1,k_z16},
    {"ymm vpermt2ps B16 aligned",8,16,1,1,k_y16},{"ymm vpermps B8 aligned",8,8,1,1,k_y8},
    {"zmm vpermt2ps B32 slide T=12",16,32,0,12,k_z32},{"zmm vpermt2ps B32 slide T=10",16,32,0,10,k_z32},{"zmm vpermt2ps B32 slide T=8",16,32,0,8,k_z32},
    {"ymm vpermt2ps B16 slide T=6",8,16,0,6,k_y16},{"ymm vpermt2ps B16 slide T=4",8,16,0,4,k_y16}};
  for(unsigned vi=0;vi<sizeof V/sizeof V[0];vi++){Pk p=pack(in,out,k,idx,val,V[vi].W,V[vi].B,V[vi].al,V[vi].T);
    TIME(V[vi].n,nc,reps,V[vi].f(&p,x,bias,y)); CHK(V[vi].n);
    double bytes=p.nent*(double)p.W*5+p.nwin*3;
    printf("   entries %ld windows %ld lane util %.1f%% packed %.2f MB  eff %.1f GB/s  %.1f useful GFLOP/s\n",p.nent,p.nwin,100.0*out*k/(p.nent*(double)p.W),bytes/1e6,bytes/1e3/tmin,2.0*out*k/1e3/tmin);
    free(p.gw);free(p.ge);free(p.woff);free(p.wcnt);free(p.v);free(p.ix);}
  loadavg("after");return 0;}
